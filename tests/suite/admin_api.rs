//! The administration, template and workspace APIs of a real `chatd serve` process: who the
//! caller is, users and tokens created by an admin and used by a member, the admin role
//! enforced, revocation and suspension, model configurations, template reads after a push, and
//! workspaces created, stopped and deleted through the API with their build logs streamed —
//! every workspace read scoped to its owner.

use chatstore::testing::Fixtures as _;
use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::TestDb;
use chatd_e2e::workspaces::{WithToken, free_port, push_example};
use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::admin_service_client::AdminServiceClient;
use chatproto::chatd::v1::template_service_client::TemplateServiceClient;
use chatproto::chatd::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use super::chat_api::{assert_status, daemon};

/// The three clients of one caller.
struct Caller {
    token: String,
    admin: AdminServiceClient<Channel>,
    templates: TemplateServiceClient<Channel>,
    workspaces: WorkspaceServiceClient<Channel>,
}

/// `self.client.method(message)` with the caller's token: the response message.
macro_rules! rpc {
    ($self:ident . $client:ident . $method:ident ( $message:expr )) => {{
        let request = $self.req($message);
        $self.$client.$method(request).await.map(|r| r.into_inner())
    }};
}

impl Caller {
    async fn new(daemon: &Daemon, token: &str) -> Self {
        let channel = super::serve::channel(daemon).await;
        Self {
            token: token.to_owned(),
            admin: AdminServiceClient::new(channel.clone()),
            templates: TemplateServiceClient::new(channel.clone()),
            workspaces: WorkspaceServiceClient::new(channel),
        }
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        message.into_request_with(self.token.clone())
    }

    async fn who_am_i(&mut self) -> Result<pb::WhoAmIResponse, tonic::Status> {
        rpc!(self.admin.who_am_i(pb::WhoAmIRequest {}))
    }

    async fn create_user(
        &mut self,
        username: &str,
        organization: Uuid,
    ) -> Result<pb::User, tonic::Status> {
        rpc!(self.admin.create_user(pb::CreateUserRequest {
            username: username.into(),
            email: format!("{username}@example.com"),
            name: format!("{username} Example"),
            role: pb::UserRole::Member.into(),
            organization_ids: vec![organization.to_string()],
        }))
    }

    async fn create_token(
        &mut self,
        user_id: &str,
        name: &str,
    ) -> Result<pb::CreateApiTokenResponse, tonic::Status> {
        rpc!(self.admin.create_api_token(pb::CreateApiTokenRequest {
            user_id: user_id.into(),
            name: name.into(),
            lifetime: None,
        }))
    }

    async fn update_user(
        &mut self,
        update: pb::UpdateUserRequest,
    ) -> Result<pb::User, tonic::Status> {
        rpc!(self.admin.update_user(update))
    }

    async fn list_models(
        &mut self,
        organization: Uuid,
    ) -> Result<Vec<pb::ModelConfig>, tonic::Status> {
        rpc!(self.admin.list_model_configs(pb::ListModelConfigsRequest {
            organization_id: organization.to_string(),
            ..Default::default()
        }))
        .map(|r| r.model_configs)
    }

    async fn create_model(
        &mut self,
        create: pb::CreateModelConfigRequest,
    ) -> Result<pb::ModelConfig, tonic::Status> {
        rpc!(self.admin.create_model_config(create))
    }

    async fn update_model(
        &mut self,
        update: pb::UpdateModelConfigRequest,
    ) -> Result<pb::ModelConfig, tonic::Status> {
        rpc!(self.admin.update_model_config(update))
    }

    async fn list_workspaces(&mut self) -> Result<Vec<pb::Workspace>, tonic::Status> {
        rpc!(
            self.workspaces
                .list_workspaces(pb::ListWorkspacesRequest::default())
        )
        .map(|r| r.workspaces)
    }

    async fn get_workspace(&mut self, id: &str) -> Result<pb::Workspace, tonic::Status> {
        rpc!(self.workspaces.get_workspace(pb::GetWorkspaceRequest {
            workspace_id: id.into(),
        }))
    }

    /// Every message of a build's log stream, until it ends.
    async fn build_logs(
        &mut self,
        build_id: &str,
        after_id: i64,
        follow: bool,
    ) -> Result<Vec<pb::StreamBuildLogsResponse>, tonic::Status> {
        let request = self.req(pb::StreamBuildLogsRequest {
            build_id: build_id.into(),
            after_id,
            follow,
        });
        let mut stream = self
            .workspaces
            .stream_build_logs(request)
            .await?
            .into_inner();
        let mut messages = Vec::new();
        let collect = async {
            while let Some(message) = stream.message().await? {
                messages.push(message);
            }
            Ok::<_, tonic::Status>(())
        };
        tokio::time::timeout(Duration::from_secs(120), collect)
            .await
            .expect("the build log stream to end")?;
        Ok(messages)
    }
}

fn model_request(organization: Uuid, model: &str) -> pb::CreateModelConfigRequest {
    pb::CreateModelConfigRequest {
        organization_id: organization.to_string(),
        provider: pb::ProviderKind::Openai.into(),
        model: model.into(),
        api_key_ref: "env:OPENAI_API_KEY".into(),
        context_limit: 128_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn admins_manage_users_and_tokens_and_members_stay_in_their_lane() {
    let mut h = TestDb::create().await;
    let key = h
        .store
        .fixture_token(h.user, "bootstrap", None)
        .await
        .unwrap();
    let daemon = daemon(&mut h).await;
    let mut admin = Caller::new(&daemon, &key.token).await;

    let me = admin.who_am_i().await.unwrap();
    let user = me.user.unwrap();
    assert_eq!(
        (user.username.as_str(), user.role()),
        ("ada", pb::UserRole::Admin)
    );
    assert_eq!(
        me.organizations
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["acme"]
    );
    assert!(
        user.last_seen_at.is_some(),
        "the call itself used the token"
    );

    // The admin creates a member and a token for them; the token works at once.
    let bob = admin.create_user("bob", h.organization).await.unwrap();
    assert_eq!(bob.role(), pb::UserRole::Member);
    assert_eq!(bob.organization_ids, [h.organization.to_string()]);
    let issued = admin.create_token(&bob.id, "laptop").await.unwrap();
    let meta = issued.api_token.unwrap();
    assert!(issued.token.starts_with(&format!("{}_", meta.prefix)));
    assert_eq!(meta.user_id, bob.id);
    let mut member = Caller::new(&daemon, &issued.token).await;
    assert_eq!(member.who_am_i().await.unwrap().user.unwrap().id, bob.id);

    // Bad and colliding input.
    assert_status(
        admin.create_user("bob", h.organization).await,
        Code::AlreadyExists,
        "bob",
    );
    assert_status(
        admin.create_user("not a name", h.organization).await,
        Code::InvalidArgument,
        "username",
    );
    assert_status(
        admin.create_user("carol", Uuid::new_v4()).await,
        Code::NotFound,
        "organization",
    );
    assert_status(
        admin.create_token(&bob.id, "laptop").await,
        Code::AlreadyExists,
        "laptop",
    );
    assert_status(
        admin.create_token(&bob.id, "  ").await,
        Code::InvalidArgument,
        "name",
    );

    // A member gets PERMISSION_DENIED on every admin call, and for other users' profiles and
    // tokens.
    assert_status(
        member.create_user("mallory", h.organization).await,
        Code::PermissionDenied,
        "admin",
    );
    let request = member.req(pb::ListUsersRequest::default());
    assert_status(
        member.admin.list_users(request).await,
        Code::PermissionDenied,
        "admin",
    );
    let request = member.req(pb::CreateOrganizationRequest {
        name: "evil".into(),
        display_name: String::new(),
    });
    assert_status(
        member.admin.create_organization(request).await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        member
            .create_model(model_request(h.organization, "gpt"))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    let request = member.req(pb::GetUserRequest {
        user_id: h.user.to_string(),
    });
    assert_status(
        member.admin.get_user(request).await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        member.create_token(&h.user.to_string(), "steal").await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        member
            .update_user(pb::UpdateUserRequest {
                user_id: bob.id.clone(),
                role: Some(pb::UserRole::Admin.into()),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "admin",
    );
    // A member sets their own instructions for the model, and nothing else about themselves.
    let own_prompt = |prompt: &str| pb::UpdateUserRequest {
        user_id: bob.id.clone(),
        custom_prompt: Some(prompt.into()),
        ..Default::default()
    };
    let updated = member
        .update_user(own_prompt("  Answer in French.  "))
        .await
        .unwrap();
    assert_eq!(updated.custom_prompt, "Answer in French.");
    assert_status(
        member
            .update_user(pb::UpdateUserRequest {
                name: Some("Robert".into()),
                ..own_prompt("x")
            })
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        member
            .update_user(own_prompt(&"x".repeat(16 * 1024 + 1)))
            .await,
        Code::InvalidArgument,
        "at most 16384",
    );

    // Someone else's token does not exist for a member.
    let request = member.req(pb::RevokeApiTokenRequest {
        api_token_id: key.id.to_string(),
    });
    assert_status(
        member.admin.revoke_api_token(request).await,
        Code::NotFound,
        "not found",
    );
    assert!(
        admin.who_am_i().await.is_ok(),
        "the admin's token still works"
    );

    // Self-service: own profile and tokens, newest first, never a secret.
    let request = member.req(pb::GetUserRequest {
        user_id: bob.id.clone(),
    });
    assert_eq!(
        member
            .admin
            .get_user(request)
            .await
            .unwrap()
            .into_inner()
            .username,
        "bob"
    );
    let own = member.create_token("", "ci").await.unwrap();
    let request = member.req(pb::ListApiTokensRequest::default());
    let tokens = member
        .admin
        .list_api_tokens(request)
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert_eq!(
        tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["ci", "laptop"]
    );

    // A revoked token stops working at once; revoking again succeeds.
    let ci_id = own.api_token.unwrap().id;
    let request = member.req(pb::RevokeApiTokenRequest {
        api_token_id: ci_id.clone(),
    });
    member.admin.revoke_api_token(request).await.unwrap();
    let mut revoked = Caller::new(&daemon, &own.token).await;
    assert_status(revoked.who_am_i().await, Code::Unauthenticated, "revoked");
    let request = admin.req(pb::RevokeApiTokenRequest {
        api_token_id: ci_id,
    });
    admin.admin.revoke_api_token(request).await.unwrap();

    // Suspension stops a user's tokens without revoking them; an admin cannot suspend or
    // demote themselves.
    let suspend = |user_id: &str, suspended: bool| pb::UpdateUserRequest {
        user_id: user_id.into(),
        suspended: Some(suspended),
        ..Default::default()
    };
    assert_status(
        admin.update_user(suspend(&h.user.to_string(), true)).await,
        Code::FailedPrecondition,
        "themselves",
    );
    let suspended = admin.update_user(suspend(&bob.id, true)).await.unwrap();
    assert!(suspended.suspended);
    assert_status(member.who_am_i().await, Code::Unauthenticated, "");
    admin.update_user(suspend(&bob.id, false)).await.unwrap();
    assert!(member.who_am_i().await.is_ok());

    // Organizations: an admin sees all, a member only theirs; memberships change.
    let request = admin.req(pb::CreateOrganizationRequest {
        name: "beta".into(),
        display_name: "Beta".into(),
    });
    let beta = admin
        .admin
        .create_organization(request)
        .await
        .unwrap()
        .into_inner();
    let names = |response: pb::ListOrganizationsResponse| -> Vec<String> {
        response.organizations.into_iter().map(|o| o.name).collect()
    };
    let request = admin.req(pb::ListOrganizationsRequest::default());
    let all = admin
        .admin
        .list_organizations(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(all), ["acme", "beta"]);
    let request = member.req(pb::ListOrganizationsRequest::default());
    let mine = member
        .admin
        .list_organizations(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(mine), ["acme"]);
    let moved = admin
        .update_user(pb::UpdateUserRequest {
            user_id: bob.id.clone(),
            organizations: Some(pb::OrganizationIdList {
                organization_ids: vec![beta.id.clone()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.organization_ids, vec![beta.id]);

    // Users page by username.
    let request = admin.req(pb::ListUsersRequest {
        page_size: 1,
        ..Default::default()
    });
    let first = admin.admin.list_users(request).await.unwrap().into_inner();
    assert_eq!(first.users[0].username, "ada");
    let request = admin.req(pb::ListUsersRequest {
        page_size: 1,
        page_token: first.next_page_token,
        ..Default::default()
    });
    let second = admin.admin.list_users(request).await.unwrap().into_inner();
    assert_eq!(second.users[0].username, "bob");
    assert!(second.next_page_token.is_empty());
    h.finish().await;
}

#[tokio::test]
async fn model_configs_are_created_listed_updated_and_deleted() {
    let mut h = TestDb::create().await;
    let key = h
        .store
        .fixture_token(h.user, "bootstrap", None)
        .await
        .unwrap();
    let bob = h
        .store
        .fixture_user("bob", "member", h.organization)
        .await
        .unwrap();
    let bob_key = h.store.fixture_token(bob, "bob", None).await.unwrap();
    let daemon = daemon(&mut h).await;
    let mut admin = Caller::new(&daemon, &key.token).await;
    let mut member = Caller::new(&daemon, &bob_key.token).await;

    // The organization's first configuration becomes its default.
    let gpt = admin
        .create_model(model_request(h.organization, "gpt-4.1"))
        .await
        .unwrap();
    assert!(gpt.is_default && gpt.enabled);
    assert_eq!(gpt.compression_threshold, 70);
    let claude = admin
        .create_model(pb::CreateModelConfigRequest {
            provider: pb::ProviderKind::Anthropic.into(),
            display_name: "Claude".into(),
            temperature: Some(0.5),
            max_output_tokens: Some(8000),
            ..model_request(h.organization, "claude-sonnet-4-5")
        })
        .await
        .unwrap();
    assert!(!claude.is_default);
    assert_eq!(claude.provider(), pb::ProviderKind::Anthropic);

    // Bad input never reaches the store.
    let bad = |edit: fn(&mut pb::CreateModelConfigRequest)| {
        let mut request = model_request(h.organization, "x");
        edit(&mut request);
        request
    };
    for (request, says) in [
        (
            bad(|r| r.provider = pb::ProviderKind::Unspecified.into()),
            "provider",
        ),
        (bad(|r| r.api_key_ref = "sk-live-123".into()), "api_key_ref"),
        // References the daemon must not read for an API admin: its database URL, a system
        // file; and a base URL that would carry credentials.
        (
            bad(|r| r.api_key_ref = "env:CHATD_DATABASE_URL".into()),
            "environment variable CHATD_DATABASE_URL is not allowed as an API key",
        ),
        (
            bad(|r| r.api_key_ref = "file:/etc/shadow".into()),
            "file /etc/shadow is not allowed as an API key",
        ),
        (
            bad(|r| r.base_url = "https://user:pass@example.com/v1".into()),
            "base_url must not carry a user or password",
        ),
        (bad(|r| r.context_limit = 0), "context_limit"),
        (
            bad(|r| r.provider = pb::ProviderKind::OpenaiCompat.into()),
            "base_url",
        ),
        (model_request(h.organization, "  "), "model"),
    ] {
        assert_status(
            admin.create_model(request).await,
            Code::InvalidArgument,
            says,
        );
    }
    assert_status(
        admin.create_model(model_request(Uuid::new_v4(), "x")).await,
        Code::NotFound,
        "organization",
    );

    // Admins see everything, default first; members see enabled ones without key references.
    let listed = admin.list_models(h.organization).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.model.as_str()).collect::<Vec<_>>(),
        ["gpt-4.1", "claude-sonnet-4-5"]
    );
    assert_eq!(listed[0].api_key_ref, "env:OPENAI_API_KEY");
    let seen = member.list_models(h.organization).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|c| c.api_key_ref.is_empty()));
    assert_status(
        member.list_models(Uuid::new_v4()).await,
        Code::NotFound,
        "organization",
    );

    // Updates: only what is set; resets; the default rules.
    let changed = admin
        .update_model(pb::UpdateModelConfigRequest {
            model_config_id: claude.id.clone(),
            temperature: Some(-1.0),
            max_output_tokens: Some(0),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (changed.temperature, changed.max_output_tokens),
        (None, None)
    );
    assert!(!changed.enabled);
    assert_eq!(changed.display_name, "Claude");
    assert_status(
        admin
            .update_model(pb::UpdateModelConfigRequest {
                model_config_id: claude.id.clone(),
                is_default: Some(true),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "disabled",
    );
    let seen = member.list_models(h.organization).await.unwrap();
    assert_eq!(
        seen.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [gpt.id.as_str()],
        "members see enabled configurations only"
    );
    assert_status(
        member
            .update_model(pb::UpdateModelConfigRequest {
                model_config_id: gpt.id.clone(),
                enabled: Some(false),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "admin",
    );
    let promoted = admin
        .update_model(pb::UpdateModelConfigRequest {
            model_config_id: claude.id.clone(),
            enabled: Some(true),
            is_default: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(promoted.is_default);
    let listed = admin.list_models(h.organization).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.model.as_str(), c.is_default))
            .collect::<Vec<_>>(),
        [("claude-sonnet-4-5", true), ("gpt-4.1", false)]
    );

    // Deletion is soft and final; a second delete finds nothing.
    let request = admin.req(pb::DeleteModelConfigRequest {
        model_config_id: claude.id.clone(),
    });
    admin.admin.delete_model_config(request).await.unwrap();
    let listed = admin.list_models(h.organization).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.id.as_str(), c.is_default))
            .collect::<Vec<_>>(),
        [(gpt.id.as_str(), false)]
    );
    let request = admin.req(pb::DeleteModelConfigRequest {
        model_config_id: claude.id.clone(),
    });
    assert_status(
        admin.admin.delete_model_config(request).await,
        Code::NotFound,
        "not found",
    );
    let request = member.req(pb::DeleteModelConfigRequest {
        model_config_id: gpt.id.clone(),
    });
    assert_status(
        member.admin.delete_model_config(request).await,
        Code::PermissionDenied,
        "admin",
    );
    h.finish().await;
}

#[tokio::test]
async fn templates_and_owned_workspaces_through_the_api_with_streamed_build_logs() {
    let mut h = TestDb::create().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let key = h
        .store
        .fixture_token(h.user, "bootstrap", None)
        .await
        .unwrap();
    let bob = h
        .store
        .fixture_user("bob", "member", h.organization)
        .await
        .unwrap();
    let bob_key = h.store.fixture_token(bob, "bob", None).await.unwrap();
    let carol = h
        .store
        .fixture_user("carol", "member", h.organization)
        .await
        .unwrap();
    let carol_key = h.store.fixture_token(carol, "carol", None).await.unwrap();
    let args = h.serve_with_provisioner(&listen, 1).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args, &[]).await.unwrap();
    let services = super::serve::reflected_services(super::serve::channel(&daemon).await).await;
    for service in ["chatd.v1.AdminService", "chatd.v1.WorkspaceService"] {
        assert!(services.contains(&service.to_owned()), "{services:?}");
    }
    let mut admin = Caller::new(&daemon, &key.token).await;
    let mut owner = Caller::new(&daemon, &bob_key.token).await;
    let mut other = Caller::new(&daemon, &carol_key.token).await;

    // Templates: list, read, versions, settings.
    let template = push_example(&daemon.url(), h.organization, &key.token)
        .await
        .to_string();
    let request = owner.req(pb::ListTemplatesRequest::default());
    let listed = owner
        .templates
        .list_templates(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.templates.len(), 1);
    assert_eq!(listed.templates[0].id, template);
    let request = owner.req(pb::GetTemplateRequest {
        template_id: template.clone(),
    });
    let got = owner
        .templates
        .get_template(request)
        .await
        .unwrap()
        .into_inner();
    let active = got.active_version.unwrap();
    assert!(active.active);
    assert_eq!(
        active.job.unwrap().status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    assert_eq!(got.template.unwrap().active_version_id, active.id);
    let request = owner.req(pb::ListTemplateVersionsRequest {
        template_id: template.clone(),
        ..Default::default()
    });
    let versions = owner
        .templates
        .list_template_versions(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        versions
            .template_versions
            .iter()
            .map(|v| v.id.as_str())
            .collect::<Vec<_>>(),
        [active.id.as_str()]
    );
    let request = owner.req(pb::GetTemplateVersionRequest {
        template_version_id: active.id.clone(),
    });
    let version = owner
        .templates
        .get_template_version(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.readme, active.readme);
    let request = owner.req(pb::GetTemplateRequest {
        template_id: Uuid::new_v4().to_string(),
    });
    assert_status(
        owner.templates.get_template(request).await,
        Code::NotFound,
        "not found",
    );
    let request = owner.req(pb::UpdateTemplateRequest {
        template_id: template.clone(),
        chat_enabled: Some(false),
        ..Default::default()
    });
    assert_status(
        owner.templates.update_template(request).await,
        Code::PermissionDenied,
        "admin",
    );
    let request = admin.req(pb::UpdateTemplateRequest {
        template_id: template.clone(),
        display_name: Some("The Shell".into()),
        ..Default::default()
    });
    let updated = admin
        .templates
        .update_template(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "The Shell");
    let request = admin.req(pb::SetActiveTemplateVersionRequest {
        template_id: template.clone(),
        template_version_id: active.id.clone(),
    });
    admin
        .templates
        .set_active_template_version(request)
        .await
        .unwrap();

    // The owner creates a workspace; its first build's logs stream until the job succeeds.
    let request = owner.req(pb::CreateWorkspaceRequest {
        organization_id: h.organization.to_string(),
        template_id: template.clone(),
        name: "shell".into(),
        ..Default::default()
    });
    let created = owner
        .workspaces
        .create_workspace(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.owner_name.as_str(), created.template_name.as_str()),
        ("bob", "shell")
    );
    let first = created.latest_build.unwrap();
    assert_eq!(first.transition(), pb::WorkspaceTransition::Start);
    let messages = owner.build_logs(&first.id, 0, true).await.unwrap();
    let last = messages.last().unwrap();
    assert_eq!(
        last.job_status(),
        pb::ProvisionerJobStatus::Succeeded,
        "{}",
        daemon.log()
    );
    let logs: Vec<&pb::BuildLog> = messages.iter().flat_map(|m| &m.logs).collect();
    assert!(!logs.is_empty(), "{messages:?}");
    assert!(logs.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    // Without follow: what exists, then the end; after the last id: nothing but the status.
    let again = owner.build_logs(&first.id, 0, false).await.unwrap();
    assert_eq!(
        again.iter().map(|m| m.logs.len()).sum::<usize>(),
        logs.len()
    );
    let rest = owner
        .build_logs(&first.id, logs[logs.len() - 1].id, false)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].logs.is_empty());
    assert_eq!(rest[0].job_status(), pb::ProvisionerJobStatus::Succeeded);

    // Reads are scoped: the owner and the admin see it, another member does not.
    let got = owner.get_workspace(&created.id).await.unwrap();
    let build = got.latest_build.unwrap();
    assert_eq!(
        build.job.as_ref().unwrap().status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    assert_eq!(build.agents.len(), 1, "{build:?}");
    assert_eq!(owner.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(admin.list_workspaces().await.unwrap().len(), 1);
    assert!(other.list_workspaces().await.unwrap().is_empty());
    let request = other.req(pb::ListWorkspacesRequest {
        owner_id: bob.to_string(),
        ..Default::default()
    });
    assert!(
        other
            .workspaces
            .list_workspaces(request)
            .await
            .unwrap()
            .into_inner()
            .workspaces
            .is_empty()
    );
    assert_status(
        other.get_workspace(&created.id).await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        other.build_logs(&first.id, 0, false).await,
        Code::NotFound,
        "not found",
    );
    let request = other.req(pb::StopWorkspaceRequest {
        workspace_id: created.id.clone(),
    });
    assert_status(
        other.workspaces.stop_workspace(request).await,
        Code::NotFound,
        "not found",
    );
    let request = owner.req(pb::CreateWorkspaceRequest {
        organization_id: h.organization.to_string(),
        template_id: template.clone(),
        name: "shell".into(),
        ..Default::default()
    });
    assert_status(
        owner.workspaces.create_workspace(request).await,
        Code::AlreadyExists,
        "shell",
    );

    // Stop, then start again, then delete: each a build whose logs end with its status.
    let request = owner.req(pb::StopWorkspaceRequest {
        workspace_id: created.id.clone(),
    });
    let stop = owner
        .workspaces
        .stop_workspace(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stop.transition(), pb::WorkspaceTransition::Stop);
    let done = owner.build_logs(&stop.id, 0, true).await.unwrap();
    assert_eq!(
        done.last().unwrap().job_status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    let request = owner.req(pb::StartWorkspaceRequest {
        workspace_id: created.id.clone(),
        ..Default::default()
    });
    let start = owner
        .workspaces
        .start_workspace(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(start.build_number, 3);
    let done = owner.build_logs(&start.id, 0, true).await.unwrap();
    assert_eq!(
        done.last().unwrap().job_status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    let request = owner.req(pb::DeleteWorkspaceRequest {
        workspace_id: created.id.clone(),
    });
    let delete = owner
        .workspaces
        .delete_workspace(request)
        .await
        .unwrap()
        .into_inner();
    let done = owner.build_logs(&delete.id, 0, true).await.unwrap();
    assert_eq!(
        done.last().unwrap().job_status(),
        pb::ProvisionerJobStatus::Succeeded
    );
    assert!(owner.list_workspaces().await.unwrap().is_empty());
    assert!(owner.get_workspace(&created.id).await.unwrap().deleted);

    // A template without live workspaces can be deleted.
    let request = admin.req(pb::UpdateTemplateRequest {
        template_id: template.clone(),
        delete: true,
        ..Default::default()
    });
    assert!(
        admin
            .templates
            .update_template(request)
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    let request = admin.req(pb::ListTemplatesRequest::default());
    assert!(
        admin
            .templates
            .list_templates(request)
            .await
            .unwrap()
            .into_inner()
            .templates
            .is_empty()
    );
    daemon
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    h.finish().await;
}
