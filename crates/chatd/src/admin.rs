//! `chatd.v1.AdminService` (spec/engine.md §8.7): organizations, users, API tokens and model
//! configurations. Every call is authenticated; most need the admin role (PERMISSION_DENIED
//! otherwise, decided before the store is asked anything). The self-service calls (WhoAmI, own
//! user, own tokens) work for members; another user's token is NOT_FOUND for them, exactly like
//! a missing one. Input is validated here, before the store.

use std::sync::Arc;

use chatengine::models::KeyReferences;
use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::admin_service_server::{AdminService, AdminServiceServer};
use chatstore::identity::Caller;
use chatstore::identity::{NewUser, UserChanges, UserListQuery};
use chatstore::models::{ModelConfigChanges, ModelConfigRecord, NewModelConfig};
use chatstore::prelude::*;
use chatstore::workspaces::valid_name;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::auth::{
    caller, check_len, not_found, parse_id, parse_optional_id, require_admin, store_status,
    with_reason,
};
use crate::convert;
use crate::paging::{
    finish_page, name_token, offset_token, page_size, parse_name_token, parse_offset_token,
    parse_time_token, time_token,
};

/// Limits on what an administrator may store.
pub(crate) const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// The longest custom prompt a user may set (bytes).
const MAX_CUSTOM_PROMPT_BYTES: usize = 16 * 1024;

const MAX_FULL_NAME_CHARS: usize = 128;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_TOKEN_NAME_CHARS: usize = 64;
const MAX_MODEL_CHARS: usize = 256;
const MAX_URL_CHARS: usize = 2048;
const MAX_KEY_REF_CHARS: usize = 1024;
/// The auto-compaction threshold of a new configuration that names none.
pub(crate) const DEFAULT_COMPRESSION_THRESHOLD: i32 = 70;

/// The admin service over a workspace store (users, tokens, organizations and model
/// configurations live there).
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    store: Arc<dyn Database>,
    keys: KeyReferences,
}

impl Admin {
    /// The service; model configurations may name only the API key references `keys` allows.
    pub(crate) fn new(store: Arc<dyn Database>, keys: KeyReferences) -> Self {
        Self { store, keys }
    }

    /// The tonic server.
    pub(crate) fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller(self.store.as_ref(), request).await
    }

    /// The user a self-service call is about: the caller for an empty id, anyone for an admin;
    /// another user is PERMISSION_DENIED for a member (`what` says what they tried).
    fn subject(caller: &Caller, user_id: &str, what: &str) -> Result<Uuid, Status> {
        match parse_optional_id("user_id", Some(user_id))? {
            None => Ok(caller.user_id),
            Some(id) if id == caller.user_id => Ok(id),
            Some(id) => require_admin(caller, &format!("{what} of another user")).map(|()| id),
        }
    }

    async fn existing_user(&self, id: Uuid) -> Result<chatstore::identity::User, Status> {
        self.store
            .user(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| user_not_found(id))
    }
}

fn user_not_found(id: Uuid) -> Status {
    not_found("user", id, "USER_NOT_FOUND")
}

fn model_config_not_found(id: Uuid) -> Status {
    not_found("model configuration", id, "MODEL_CONFIG_NOT_FOUND")
}

/// A username or organization name: 1–32 ASCII letters and digits in runs separated by single
/// hyphens.
fn check_name(field: &str, value: &str) -> Result<(), Status> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {value:?} is invalid: use 1–32 ASCII letters and digits, in runs separated \
             by single hyphens"
        )))
    }
}

/// An email address: one `@` with text on both sides, no whitespace.
fn check_email(value: &str) -> Result<String, Status> {
    let email = value.trim();
    check_len("email", email, MAX_EMAIL_CHARS)?;
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "email {value:?} is not an email address"
        )))
    }
}

/// A role to store; `unspecified` is `default` (None = refused).
fn role(value: i32, default: Option<&str>) -> Result<String, Status> {
    match pb::UserRole::try_from(value) {
        Ok(pb::UserRole::Admin) => Ok("admin".into()),
        Ok(pb::UserRole::Member) => Ok("member".into()),
        Ok(pb::UserRole::Unspecified) => default
            .map(str::to_owned)
            .ok_or_else(|| Status::invalid_argument("role must be specified")),
        Err(_) => Err(Status::invalid_argument(format!("unknown role {value}"))),
    }
}

fn organization_ids(ids: &[String]) -> Result<Vec<Uuid>, Status> {
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        let id = parse_id("organization_ids", id)?;
        if !parsed.contains(&id) {
            parsed.push(id);
        }
    }
    Ok(parsed)
}

/// A provider kind to store.
fn provider(value: i32) -> Result<String, Status> {
    pb::ProviderKind::try_from(value)
        .ok()
        .and_then(convert::provider_wire)
        .ok_or_else(|| Status::invalid_argument("provider must be specified"))
}

pub(crate) fn check_model(model: &str) -> Result<String, Status> {
    let model = model.trim();
    if model.is_empty() {
        return Err(Status::invalid_argument("model must not be blank"));
    }
    check_len("model", model, MAX_MODEL_CHARS)?;
    Ok(model.to_owned())
}

/// An `http://` or `https://` URL (or empty) that carries no credentials: no user or password
/// before the host, no query parameter named like a key or token. The API key goes with the
/// requests to this URL; credentials in it would be stored and shown as plain configuration.
pub(crate) fn check_base_url(url: &str) -> Result<String, Status> {
    let url = url.trim();
    check_len("base_url", url, MAX_URL_CHARS)?;
    if url.is_empty() {
        return Ok(String::new());
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(Status::invalid_argument(format!(
            "base_url {url:?} must start with http:// or https://"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(Status::invalid_argument(
            "base_url must not carry a user or password; give the key as api_key_ref",
        ));
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        if ["key", "token", "secret", "password", "auth", "sig"]
            .iter()
            .any(|word| name.contains(word))
        {
            return Err(Status::invalid_argument(format!(
                "base_url must not carry credentials (query parameter {name:?}); give the key as \
                 api_key_ref"
            )));
        }
    }
    Ok(url.to_owned())
}

/// `env:<NAME>` or `file:<path>` that `keys` allows (or empty): a reference, never a key.
pub(crate) fn check_key_ref(keys: &KeyReferences, value: &str) -> Result<String, Status> {
    let value = value.trim();
    check_len("api_key_ref", value, MAX_KEY_REF_CHARS)?;
    keys.check(value)
        .map_err(|why| Status::invalid_argument(format!("api_key_ref: {why}")))?;
    Ok(value.to_owned())
}

/// The providers that have no public endpoint need a base URL.
pub(crate) fn check_provider_url(provider: &str, base_url: &str) -> Result<(), Status> {
    if base_url.is_empty() && matches!(provider, "openai-compat" | "azure") {
        return Err(Status::invalid_argument(format!(
            "base_url is required for provider {provider}"
        )));
    }
    Ok(())
}

pub(crate) fn check_context_limit(limit: i64) -> Result<i64, Status> {
    if limit <= 0 {
        return Err(Status::invalid_argument("context_limit must be > 0"));
    }
    Ok(limit)
}

fn check_threshold(threshold: i32) -> Result<i32, Status> {
    if !(0..=100).contains(&threshold) {
        return Err(Status::invalid_argument(
            "compression_threshold must be within 0..100",
        ));
    }
    Ok(threshold)
}

fn check_temperature(t: f64) -> Result<f64, Status> {
    if !t.is_finite() || t < 0.0 {
        return Err(Status::invalid_argument(
            "temperature must be a finite number ≥ 0",
        ));
    }
    Ok(t)
}

fn options(s: Option<&chatproto::prost_types::Struct>) -> serde_json::Value {
    s.map_or_else(|| serde_json::json!({}), convert::struct_json)
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = self.caller(&request).await?;
        let user = self.existing_user(caller.user_id).await?;
        let organizations = self
            .store
            .list_organizations(Some(&caller.organizations), None, i64::MAX)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: Some(convert::user(&user)),
            organizations: organizations.iter().map(convert::organization).collect(),
        }))
    }

    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "creating organizations")?;
        let r = request.into_inner();
        check_name("name", &r.name)?;
        let display_name = r.display_name.trim();
        check_len("display_name", display_name, MAX_DISPLAY_NAME_CHARS)?;
        let created = self
            .store
            .add_organization(&r.name, display_name)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::organization(&created)))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = parse_name_token(&r.page_token)?;
        let only = (caller.role != "admin").then_some(caller.organizations.as_slice());
        let rows = self
            .store
            .list_organizations(
                only,
                after.as_ref().map(|(name, _)| name.as_str()),
                limit + 1,
            )
            .await
            .map_err(store_status)?;
        let (rows, next_page_token) = finish_page(rows, limit, |o| name_token(&o.name, o.id));
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: rows.iter().map(convert::organization).collect(),
            next_page_token,
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "creating users")?;
        let r = request.into_inner();
        check_name("username", &r.username)?;
        let name = r.name.trim();
        check_len("name", name, MAX_FULL_NAME_CHARS)?;
        let user = NewUser {
            username: r.username.clone(),
            email: check_email(&r.email)?,
            name: name.to_owned(),
            role: role(r.role, Some("member"))?,
            organization_ids: organization_ids(&r.organization_ids)?,
        };
        let created = self.store.add_user(&user).await.map_err(store_status)?;
        Ok(Response::new(convert::user(&created)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "listing users")?;
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = parse_name_token(&r.page_token)?;
        let query = UserListQuery {
            organization_id: parse_optional_id("organization_id", Some(&r.organization_id))?,
            query: r.query,
            include_suspended: r.include_suspended,
            after_username: after.map(|(username, _)| username),
            limit: limit + 1,
        };
        let rows = self.store.list_users(&query).await.map_err(store_status)?;
        let (rows, next_page_token) = finish_page(rows, limit, |u| name_token(&u.username, u.id));
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(convert::user).collect(),
            next_page_token,
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id)?;
        let id = Self::subject(&caller, &id.to_string(), "reading the profile")?;
        let user = self.existing_user(id).await?;
        Ok(Response::new(convert::user(&user)))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        // A member may change their own instructions, and nothing else.
        let own_prompt_only = id == caller.user_id
            && r.email.is_none()
            && r.name.is_none()
            && r.role.is_none()
            && r.organizations.is_none()
            && r.suspended.is_none();
        if !own_prompt_only {
            require_admin(&caller, "changing users")?;
        }
        if let Some(prompt) = &r.custom_prompt
            && prompt.len() > MAX_CUSTOM_PROMPT_BYTES
        {
            return Err(Status::invalid_argument(format!(
                "custom_prompt is {} bytes; at most {MAX_CUSTOM_PROMPT_BYTES} are allowed",
                prompt.len()
            )));
        }
        let changes = UserChanges {
            email: r.email.as_deref().map(check_email).transpose()?,
            name: r
                .name
                .as_deref()
                .map(|n| {
                    check_len("name", n.trim(), MAX_FULL_NAME_CHARS).map(|()| n.trim().to_owned())
                })
                .transpose()?,
            role: r.role.map(|v| role(v, None)).transpose()?,
            organization_ids: r
                .organizations
                .as_ref()
                .map(|list| organization_ids(&list.organization_ids))
                .transpose()?,
            suspended: r.suspended,
            custom_prompt: r.custom_prompt.map(|p| p.trim().to_owned()),
        };
        if id == caller.user_id
            && (changes.suspended == Some(true)
                || changes.role.as_deref().is_some_and(|r| r != "admin"))
        {
            return Err(with_reason(
                Code::FailedPrecondition,
                "an admin cannot suspend or demote themselves; another admin must do it",
                "SELF_DEMOTION",
            ));
        }
        let updated = self
            .store
            .update_user(id, &changes)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::user(&updated)))
    }

    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let user_id = Self::subject(&caller, &r.user_id, "creating tokens")?;
        let name = r.name.trim();
        if name.is_empty() {
            return Err(Status::invalid_argument("name must not be blank"));
        }
        check_len("name", name, MAX_TOKEN_NAME_CHARS)?;
        let lifetime = match r.lifetime {
            None => None,
            Some(d) => {
                let d = std::time::Duration::try_from(d)
                    .map_err(|_| Status::invalid_argument("lifetime must not be negative"))?;
                (!d.is_zero()).then_some(d)
            }
        };
        let (key, token) = self
            .store
            .issue_api_token(user_id, name, lifetime)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::CreateApiTokenResponse {
            token: key.token,
            api_token: Some(convert::api_token(&token)),
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let user_id = Self::subject(&caller, &r.user_id, "listing tokens")?;
        let limit = page_size(r.page_size)?;
        let after = parse_time_token(&r.page_token)?;
        let rows = self
            .store
            .list_api_tokens(user_id, after, limit + 1)
            .await
            .map_err(store_status)?;
        let (rows, next_page_token) = finish_page(rows, limit, |t| time_token(t.created_at, t.id));
        Ok(Response::new(pb::ListApiTokensResponse {
            api_tokens: rows.iter().map(convert::api_token).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::RevokeApiTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = parse_id("api_token_id", &request.get_ref().api_token_id)?;
        match self.store.api_token(id).await.map_err(store_status)? {
            Some(token) if token.user_id == caller.user_id || caller.role == "admin" => {}
            // Another user's token does not exist for a member.
            _ => {
                return Err(not_found("API token", id, "API_TOKEN_NOT_FOUND"));
            }
        }
        self.store.revoke_api_key(id).await.map_err(store_status)?;
        Ok(Response::new(pb::RevokeApiTokenResponse {}))
    }

    async fn create_model_config(
        &self,
        request: Request<pb::CreateModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfig>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "creating model configurations")?;
        let r = request.into_inner();
        let provider = provider(r.provider)?;
        let base_url = check_base_url(&r.base_url)?;
        check_provider_url(&provider, &base_url)?;
        let display_name = r.display_name.trim().to_owned();
        check_len("display_name", &display_name, MAX_DISPLAY_NAME_CHARS)?;
        if r.max_output_tokens.is_some_and(|n| n <= 0) {
            return Err(Status::invalid_argument("max_output_tokens must be > 0"));
        }
        let config = NewModelConfig {
            organization_id: parse_id("organization_id", &r.organization_id)?,
            provider,
            model: check_model(&r.model)?,
            display_name,
            base_url,
            api_key_ref: check_key_ref(&self.keys, &r.api_key_ref)?,
            context_limit: check_context_limit(r.context_limit)?,
            compression_threshold: check_threshold(
                r.compression_threshold
                    .unwrap_or(DEFAULT_COMPRESSION_THRESHOLD),
            )?,
            max_output_tokens: r.max_output_tokens,
            temperature: r.temperature.map(check_temperature).transpose()?,
            enabled: r.enabled.unwrap_or(true),
            is_default: r.is_default,
            options: options(r.options.as_ref()),
        };
        let created = self
            .store
            .add_model_config(&config)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::model_config(&created, true)))
    }

    async fn list_model_configs(
        &self,
        request: Request<pb::ListModelConfigsRequest>,
    ) -> Result<Response<pb::ListModelConfigsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let organization_id = parse_id("organization_id", &r.organization_id)?;
        if !caller.organizations.contains(&organization_id) {
            return Err(not_found(
                "organization",
                organization_id,
                "ORGANIZATION_NOT_FOUND",
            ));
        }
        let limit = page_size(r.page_size)?;
        let offset = parse_offset_token(&r.page_token)?;
        let admin = caller.role == "admin";
        let rows = self
            .store
            .list_model_configs(organization_id, !admin, offset, limit + 1)
            .await
            .map_err(store_status)?;
        let shown = i64::try_from(rows.len()).unwrap_or(i64::MAX).min(limit);
        let (rows, next_page_token) =
            finish_page(rows, limit, |_| offset_token(offset.saturating_add(shown)));
        Ok(Response::new(pb::ListModelConfigsResponse {
            model_configs: rows
                .iter()
                .map(|c| convert::model_config(c, admin))
                .collect(),
            next_page_token,
        }))
    }

    async fn update_model_config(
        &self,
        request: Request<pb::UpdateModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfig>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "changing model configurations")?;
        let r = request.into_inner();
        let id = parse_id("model_config_id", &r.model_config_id)?;
        let changes = ModelConfigChanges {
            provider: r.provider.map(provider).transpose()?,
            model: r.model.as_deref().map(check_model).transpose()?,
            display_name: r
                .display_name
                .as_deref()
                .map(|n| {
                    check_len("display_name", n.trim(), MAX_DISPLAY_NAME_CHARS)
                        .map(|()| n.trim().to_owned())
                })
                .transpose()?,
            base_url: r.base_url.as_deref().map(check_base_url).transpose()?,
            api_key_ref: r
                .api_key_ref
                .as_deref()
                .map(|r| check_key_ref(&self.keys, r))
                .transpose()?,
            context_limit: r.context_limit.map(check_context_limit).transpose()?,
            compression_threshold: r.compression_threshold.map(check_threshold).transpose()?,
            max_output_tokens: match r.max_output_tokens {
                None => None,
                Some(0) => Some(None),
                Some(n) if n > 0 => Some(Some(n)),
                Some(_) => {
                    return Err(Status::invalid_argument(
                        "max_output_tokens must be > 0 (0 resets it)",
                    ));
                }
            },
            temperature: match r.temperature {
                None => None,
                Some(t) if t < 0.0 => Some(None),
                Some(t) => Some(Some(check_temperature(t)?)),
            },
            enabled: r.enabled,
            is_default: r.is_default,
            options: r.options.as_ref().map(convert::struct_json),
        };
        let current: ModelConfigRecord = self
            .store
            .model_config(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| model_config_not_found(id))?;
        check_provider_url(
            changes.provider.as_deref().unwrap_or(&current.provider),
            changes.base_url.as_deref().unwrap_or(&current.base_url),
        )?;
        let updated = self
            .store
            .update_model_config(id, &changes)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::model_config(&updated, true)))
    }

    async fn delete_model_config(
        &self,
        request: Request<pb::DeleteModelConfigRequest>,
    ) -> Result<Response<pb::DeleteModelConfigResponse>, Status> {
        let caller = self.caller(&request).await?;
        require_admin(&caller, "deleting model configurations")?;
        let id = parse_id("model_config_id", &request.get_ref().model_config_id)?;
        self.store
            .delete_model_config(id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::DeleteModelConfigResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_one_at_with_text_around_it() {
        assert_eq!(check_email(" ada@example.com ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@x", "ada@", "a@b@c", "a b@c"] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_refs_are_allowed_references_never_keys() {
        let keys = KeyReferences::default();
        for good in ["", "env:ANTHROPIC_API_KEY", "file:/run/secrets/key"] {
            assert!(check_key_ref(&keys, good).is_ok(), "{good:?}");
        }
        for bad in [
            "sk-ant-123",
            "env:",
            "env:A-B",
            "file:",
            "env:CHATD_DATABASE_URL",
            "file:/etc/shadow",
        ] {
            assert!(check_key_ref(&keys, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_urls_carry_no_credentials() {
        for good in [
            "",
            "https://api.example.com/v1",
            "http://127.0.0.1:8000/v1",
            "https://x.openai.azure.com/openai?api-version=2024-10-21",
        ] {
            assert!(check_base_url(good).is_ok(), "{good:?}");
        }
        for bad in [
            "ftp://example.com",
            "https://user:pass@example.com/v1",
            "https://token@example.com",
            "https://example.com/v1?api_key=sk-1",
            "https://example.com/v1?x=1&access_token=t",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_default_only_where_allowed() {
        assert_eq!(role(0, Some("member")).unwrap(), "member");
        assert_eq!(role(1, None).unwrap(), "admin");
        assert!(role(0, None).is_err());
        assert!(role(42, Some("member")).is_err());
    }

    #[test]
    fn self_service_calls_need_admin_for_someone_else() {
        let me = Uuid::new_v4();
        let member = Caller {
            user_id: me,
            role: "member".into(),
            key_id: Uuid::new_v4(),
            organizations: Vec::new(),
        };
        assert_eq!(Admin::subject(&member, "", "x").unwrap(), me);
        assert_eq!(Admin::subject(&member, &me.to_string(), "x").unwrap(), me);
        let other = Uuid::new_v4().to_string();
        assert_eq!(
            Admin::subject(&member, &other, "x").unwrap_err().code(),
            Code::PermissionDenied
        );
        let admin = Caller {
            role: "admin".into(),
            ..member
        };
        assert!(Admin::subject(&admin, &other, "x").is_ok());
    }
}
