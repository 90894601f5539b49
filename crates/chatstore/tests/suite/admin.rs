//! The administration side of the store against PostgreSQL (chatd.v1.AdminService): users,
//! organizations, token metadata, model configurations, and the template and workspace
//! listings of the template and workspace APIs.

use std::time::Duration;

use chatstore::StoreError;
use chatstore::identity::{NewUser, UserChanges, UserListQuery};
use chatstore::models::{ModelConfigChanges, NewModelConfig};
use chatstore::prelude::*;
use chatstore::workspaces::{WorkspaceListQuery, WorkspaceTransition};
use uuid::Uuid;

use super::workspace::{started_workspace, version};

fn new_user(username: &str, email: &str, organizations: Vec<Uuid>) -> NewUser {
    NewUser {
        username: username.into(),
        email: email.into(),
        name: format!("{username} Lovelace"),
        role: "member".into(),
        organization_ids: organizations,
    }
}

both_backends!(organizations_are_unique_by_name_and_listed_by_name_in_pages, organizations_are_unique_by_name_and_listed_by_name_in_pages_on_sqlite => organizations_are_unique_by_name_and_listed_by_name_in_pages_on(org, user));

async fn organizations_are_unique_by_name_and_listed_by_name_in_pages_on(
    store: &(impl IdentityStore + ?Sized),
    org: Uuid,
    _user: Uuid,
) {
    let zeta = store.add_organization("zeta", "Zeta Inc").await.unwrap();
    let beta = store.add_organization("beta", "").await.unwrap();
    assert_eq!(
        (zeta.name.as_str(), zeta.display_name.as_str()),
        ("zeta", "Zeta Inc")
    );
    let err = store.add_organization("zeta", "again").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let all = store.list_organizations(None, None, 10).await.unwrap();
    let names: Vec<&str> = all.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["acme", "beta", "zeta"]);
    let page = store
        .list_organizations(None, Some("acme"), 1)
        .await
        .unwrap();
    assert_eq!(page, vec![beta.clone()]);
    let only = store
        .list_organizations(Some(&[zeta.id, org]), None, 10)
        .await
        .unwrap();
    assert_eq!(
        only.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![org, zeta.id]
    );
    assert_eq!(store.organization(beta.id).await.unwrap(), Some(beta));
    assert_eq!(store.organization(Uuid::new_v4()).await.unwrap(), None);
}

both_backends!(users_are_created_with_memberships_listed_and_changed, users_are_created_with_memberships_listed_and_changed_on_sqlite => users_are_created_with_memberships_listed_and_changed_on(org, user));

async fn users_are_created_with_memberships_listed_and_changed_on(
    store: &(impl IdentityStore + ?Sized),
    org: Uuid,
    _user: Uuid,
) {
    let other = store.add_organization("other", "").await.unwrap();
    let bob = store
        .add_user(&new_user("bob", "bob@example.com", vec![org, other.id]))
        .await
        .unwrap();
    assert_eq!(bob.organization_ids, vec![org, other.id]);
    assert_eq!((bob.role.as_str(), bob.suspended), ("member", false));
    assert_eq!(bob.last_seen_at, None);

    // Username and email (case-insensitively) are unique; unknown organizations are refused
    // and leave nothing behind.
    let taken = store
        .add_user(&new_user("bob", "b2@example.com", vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, StoreError::Conflict(m) if m.contains("username")),
        "{taken:?}"
    );
    let taken = store
        .add_user(&new_user("bob2", "BOB@example.com", vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, StoreError::Conflict(m) if m.contains("email")),
        "{taken:?}"
    );
    let missing = store
        .add_user(&new_user(
            "carol",
            "carol@example.com",
            vec![Uuid::new_v4()],
        ))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    assert!(
        store
            .list_users(&UserListQuery {
                query: "carol".into(),
                include_suspended: true,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    let dora = store
        .add_user(&new_user("dora", "dora@example.com", vec![other.id]))
        .await
        .unwrap();
    let listed = |query: UserListQuery| {
        let store = &store;
        async move {
            store
                .list_users(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.username)
                .collect::<Vec<_>>()
        }
    };
    let all = UserListQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(listed(all.clone()).await, ["ada", "bob", "dora"]);
    assert_eq!(
        listed(UserListQuery {
            organization_id: Some(other.id),
            ..all.clone()
        })
        .await,
        ["bob", "dora"]
    );
    assert_eq!(
        listed(UserListQuery {
            query: "DORA@".into(),
            ..all.clone()
        })
        .await,
        ["dora"]
    );
    assert_eq!(
        listed(UserListQuery {
            after_username: Some("ada".into()),
            limit: 1,
            ..all.clone()
        })
        .await,
        ["bob"]
    );

    // Changes: only what is set; memberships are replaced; suspended users are hidden from
    // listings unless asked for.
    let changed = store
        .update_user(
            dora.id,
            &UserChanges {
                name: Some("Dora".into()),
                role: Some("admin".into()),
                organization_ids: Some(vec![org]),
                suspended: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            changed.name.as_str(),
            changed.role.as_str(),
            changed.email.as_str()
        ),
        ("Dora", "admin", "dora@example.com")
    );
    assert_eq!(changed.organization_ids, vec![org]);
    assert!(changed.suspended && changed.updated_at >= dora.updated_at);
    assert_eq!(listed(all.clone()).await, ["ada", "bob"]);
    assert_eq!(
        listed(UserListQuery {
            include_suspended: true,
            ..all.clone()
        })
        .await,
        ["ada", "bob", "dora"]
    );
    let clash = store
        .update_user(
            dora.id,
            &UserChanges {
                email: Some("bob@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(clash, StoreError::Conflict(_)), "{clash:?}");
    let missing = store
        .update_user(Uuid::new_v4(), &UserChanges::default())
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    assert_eq!(store.user(dora.id).await.unwrap(), Some(changed));
}

both_backends!(issued_tokens_have_unique_names_metadata_and_pages, issued_tokens_have_unique_names_metadata_and_pages_on_sqlite => issued_tokens_have_unique_names_metadata_and_pages_on(org, user));

async fn issued_tokens_have_unique_names_metadata_and_pages_on(
    store: &(impl IdentityStore + ?Sized),
    _org: Uuid,
    user: Uuid,
) {
    let (laptop, meta) = store
        .issue_api_token(user, "laptop", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(meta.id, laptop.id);
    assert!(laptop.token.starts_with(&format!("{}_", meta.prefix)));
    assert!(meta.expires_at.is_some() && meta.revoked_at.is_none());
    let dup = store
        .issue_api_token(user, "laptop", None)
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
    let nobody = store
        .issue_api_token(Uuid::new_v4(), "x", None)
        .await
        .unwrap_err();
    assert!(matches!(nobody, StoreError::NotFound(_)), "{nobody:?}");

    let (ci, _) = store.issue_api_token(user, "ci", None).await.unwrap();
    let listed: Vec<Uuid> = store
        .list_api_tokens(user, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![ci.id, laptop.id], "newest first");
    let first = store.list_api_tokens(user, None, 1).await.unwrap();
    let next = store
        .list_api_tokens(user, Some((first[0].created_at, first[0].id)), 1)
        .await
        .unwrap();
    assert_eq!(next[0].id, laptop.id);

    // Authenticating stamps last_used_at (and so the user's last_seen_at).
    store.authenticate(&ci.token).await.unwrap().unwrap();
    let used = store.api_token(ci.id).await.unwrap().unwrap();
    assert!(used.last_used_at.is_some());
    let seen = store.user(user).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, used.last_used_at);

    // A revoked token leaves the listing, frees its name and keeps its metadata.
    store.revoke_api_key(laptop.id).await.unwrap();
    let listed = store.list_api_tokens(user, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ci.id]);
    assert!(
        store
            .api_token(laptop.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    store.issue_api_token(user, "laptop", None).await.unwrap();
}

fn model(org: Uuid, name: &str) -> NewModelConfig {
    NewModelConfig {
        organization_id: org,
        provider: "openai".into(),
        model: name.into(),
        display_name: String::new(),
        base_url: String::new(),
        api_key_ref: "env:OPENAI_API_KEY".into(),
        context_limit: 128_000,
        compression_threshold: 70,
        max_output_tokens: Some(4096),
        temperature: Some(0.2),
        enabled: true,
        is_default: false,
        options: serde_json::json!({"reasoning_effort": "high"}),
    }
}

both_backends!(model_configs_keep_one_enabled_default, model_configs_keep_one_enabled_default_on_sqlite => model_configs_keep_one_enabled_default_on(org, model_config));

async fn model_configs_keep_one_enabled_default_on(
    store: &(impl IdentityStore + ModelStore + ?Sized),
    org: Uuid,
    seeded_model: Uuid,
) {
    // The seeded `claude` is the default; a new one does not take it unless asked.
    let gpt = store
        .add_model_config(&model(org, "gpt-4.1"))
        .await
        .unwrap();
    assert!(!gpt.is_default);
    assert_eq!(
        (
            gpt.provider.as_str(),
            gpt.max_output_tokens,
            gpt.temperature
        ),
        ("openai", Some(4096), Some(0.2))
    );
    let mini = store
        .add_model_config(&NewModelConfig {
            is_default: true,
            ..model(org, "gpt-4.1-mini")
        })
        .await
        .unwrap();
    assert!(mini.is_default);
    let order: Vec<(String, bool)> = store
        .list_model_configs(org, false, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.model, c.is_default))
        .collect();
    assert_eq!(
        order,
        [
            ("gpt-4.1-mini".to_owned(), true),
            ("claude".to_owned(), false),
            ("gpt-4.1".to_owned(), false)
        ]
    );
    assert_eq!(
        store.resolve_model_config(org, None).await.unwrap().id,
        mini.id
    );

    // Disabling the default clears it; a disabled one cannot become the default; enabled-only
    // listings hide it.
    let off = store
        .update_model_config(
            mini.id,
            &ModelConfigChanges {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!off.enabled && !off.is_default);
    let refused = store
        .update_model_config(
            mini.id,
            &ModelConfigChanges {
                is_default: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Precondition(_)),
        "{refused:?}"
    );
    let enabled = store.list_model_configs(org, true, 0, 10).await.unwrap();
    assert!(enabled.iter().all(|c| c.id != mini.id));
    assert!(matches!(
        store.resolve_model_config(org, None).await,
        Err(StoreError::NoDefaultModelConfig)
    ));

    // Provider settings move to the configuration's own provider row; resets and options.
    let changed = store
        .update_model_config(
            gpt.id,
            &ModelConfigChanges {
                provider: Some("openai-compat".into()),
                base_url: Some("http://127.0.0.1:9".into()),
                max_output_tokens: Some(None),
                temperature: Some(None),
                is_default: Some(true),
                options: Some(serde_json::json!({})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            changed.provider.as_str(),
            changed.base_url.as_str(),
            changed.api_key_ref.as_str()
        ),
        ("openai-compat", "http://127.0.0.1:9", "env:OPENAI_API_KEY")
    );
    assert_eq!(
        (changed.max_output_tokens, changed.temperature),
        (None, None)
    );
    assert!(changed.is_default && changed.options == serde_json::json!({}));
    let seeded = store.model_config(seeded_model).await.unwrap().unwrap();
    assert_eq!(
        seeded.provider, "anthropic",
        "other configurations keep their provider"
    );

    // Deleting the default leaves the organization without one; deleted ones are gone.
    store.delete_model_config(gpt.id).await.unwrap();
    assert_eq!(store.model_config(gpt.id).await.unwrap(), None);
    let again = store.delete_model_config(gpt.id).await.unwrap_err();
    assert!(matches!(again, StoreError::NotFound(_)), "{again:?}");
    assert!(
        store
            .list_model_configs(org, false, 0, 10)
            .await
            .unwrap()
            .iter()
            .all(|c| !c.is_default && c.id != gpt.id)
    );

    // The first enabled configuration of an organization becomes its default regardless.
    let fresh = store.add_organization("fresh", "").await.unwrap();
    let first = store
        .add_model_config(&NewModelConfig {
            organization_id: fresh.id,
            ..model(org, "gpt-4.1")
        })
        .await
        .unwrap();
    assert!(first.is_default);
    let bad = store
        .add_model_config(&NewModelConfig {
            provider: "nope".into(),
            ..model(org, "x")
        })
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::InvalidInput(_)), "{bad:?}");
}

both_backends!(seeding_adds_a_model_once_and_follows_only_its_key_reference, seeding_adds_a_model_once_and_follows_only_its_key_reference_on_sqlite => seeding_adds_a_model_once_and_follows_only_its_key_reference_on(org));

async fn seeding_adds_a_model_once_and_follows_only_its_key_reference_on(
    store: &(impl ModelStore + ?Sized),
    org: Uuid,
) {
    use chatstore::models::Seeded as Seed;
    let before = store
        .list_model_configs(org, false, 0, 100)
        .await
        .unwrap()
        .len();
    let seed = NewModelConfig {
        provider: "openai-compat".into(),
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key_ref: String::new(),
        ..model(org, "local")
    };

    // Replicas starting together: one configuration, whoever wins.
    let (a, b) = tokio::join!(
        store.seed_model_config(&seed),
        store.seed_model_config(&seed)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.record().id, b.record().id);
    let created = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Seed::Created(_)))
        .count();
    assert_eq!(created, 1, "{a:?} {b:?}");
    let id = a.record().id;
    assert_eq!(
        store
            .list_model_configs(org, false, 0, 100)
            .await
            .unwrap()
            .len(),
        before + 1
    );

    // The administrators' changes stay; a new key reference is taken.
    store
        .update_model_config(
            id,
            &ModelConfigChanges {
                display_name: Some("Local".into()),
                context_limit: Some(32_768),
                ..ModelConfigChanges::default()
            },
        )
        .await
        .unwrap();
    let again = store.seed_model_config(&seed).await.unwrap();
    assert!(matches!(again, Seed::Unchanged(_)), "{again:?}");
    let rotated = store
        .seed_model_config(&NewModelConfig {
            api_key_ref: "file:/run/secrets/local".into(),
            ..seed.clone()
        })
        .await
        .unwrap();
    let Seed::KeyChanged(record) = rotated else {
        panic!("expected a key change, got {rotated:?}");
    };
    assert_eq!(
        (
            record.id,
            record.display_name.as_str(),
            record.context_limit,
            record.api_key_ref.as_str()
        ),
        (id, "Local", 32_768, "file:/run/secrets/local")
    );

    // Another base URL is another model; an unknown organization is NOT_FOUND.
    let other = store
        .seed_model_config(&NewModelConfig {
            base_url: "http://127.0.0.1:10/v1".into(),
            ..seed.clone()
        })
        .await
        .unwrap();
    assert!(matches!(other, Seed::Created(_)), "{other:?}");
    let missing = store
        .seed_model_config(&NewModelConfig {
            organization_id: Uuid::new_v4(),
            ..seed
        })
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
}

both_backends!(model_listings_order_by_name_beyond_ascii_in_pages, model_listings_order_by_name_beyond_ascii_in_pages_on_sqlite => model_listings_order_by_name_beyond_ascii_in_pages_on());

async fn model_listings_order_by_name_beyond_ascii_in_pages_on(
    store: &(impl IdentityStore + ModelStore + ?Sized),
) {
    let org = store.add_organization("names", "").await.unwrap().id;
    let mut ids = Vec::new();
    for (name, display_name) in [
        ("alpha", ""),
        ("m1", "Émile"),
        ("m2", "éclair"),
        ("m3", "Beta"),
        ("delta", ""),
    ] {
        let created = store
            .add_model_config(&NewModelConfig {
                display_name: display_name.into(),
                ..model(org, name)
            })
            .await
            .unwrap();
        assert_eq!(created.created_at, created.updated_at);
        ids.push(created.id);
    }
    let listed = |offset, limit| async move {
        store
            .list_model_configs(org, false, offset, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.model)
            .collect::<Vec<_>>()
    };
    // The default (the first one) leads; the others go by display name, else model, folded to
    // lower case: "éclair" before "Émile".
    assert_eq!(listed(0, 10).await, ["alpha", "m3", "delta", "m2", "m1"]);
    assert_eq!(listed(1, 2).await, ["m3", "delta"]);
    assert_eq!(listed(4, 10).await, ["m1"]);

    // A change is stamped after the creation; a temperature that is not a number is refused
    // like a negative one.
    let changed = store
        .update_model_config(
            ids[1],
            &ModelConfigChanges {
                context_limit: Some(1_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(changed.updated_at >= changed.created_at, "{changed:?}");
    for temperature in [f64::NAN, -1.0] {
        let refused = store
            .update_model_config(
                ids[1],
                &ModelConfigChanges {
                    temperature: Some(Some(temperature)),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::InvalidInput(_)),
            "{refused:?}"
        );
        let refused = store
            .add_model_config(&NewModelConfig {
                temperature: Some(temperature),
                ..model(org, "hot")
            })
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::InvalidInput(_)),
            "{refused:?}"
        );
    }
}

both_backends!(template_and_workspace_listings_for_the_api, template_and_workspace_listings_for_the_api_on_sqlite => template_and_workspace_listings_for_the_api_on(org, user));

async fn template_and_workspace_listings_for_the_api_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let (workspace, first_build) = started_workspace(store, org, user).await;
    let template = store.template(workspace.template_id).await.unwrap();
    let other = store
        .push_template_version(version(org, user, "alpha", false))
        .await
        .unwrap();
    store
        .update_template(
            other.template_id,
            chatstore::templates::TemplateSettings {
                deprecated: Some("old".into()),
                display_name: Some("Alpha".into()),
                default_ttl_ms: Some(60_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Templates by name, deprecated ones included, with their developers, in pages.
    let listed = store
        .list_organization_templates(&[org], "", None, 10)
        .await
        .unwrap();
    let rows: Vec<(&str, i64, &str)> = listed
        .iter()
        .map(|l| {
            (
                l.template.name.as_str(),
                l.active_developers,
                l.template.display_name.as_str(),
            )
        })
        .collect();
    assert_eq!(rows, [("alpha", 0, "Alpha"), ("shell", 1, "Shell")]);
    let page = store
        .list_organization_templates(&[org], "", Some(("alpha".into(), other.template_id)), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].template.id, template.id);
    assert!(
        store
            .list_organization_templates(&[Uuid::new_v4()], "", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.active_developers(template.id).await.unwrap(), 1);

    // Versions newest first, without their files.
    let second = store
        .push_template_version(NewTemplateVersionExt::named(
            version(org, user, "shell", false),
            "v2",
        ))
        .await
        .unwrap();
    let versions = store
        .list_template_versions(template.id, None, 10)
        .await
        .unwrap();
    assert_eq!(
        versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["v2", "v1"]
    );
    assert_eq!(versions[0].id, second.version_id);
    assert!(versions.iter().all(|v| v.files.is_null()));
    assert_eq!(versions[0].parameters.len(), 1);
    assert_eq!(versions[0].created_by, Some(user));
    let older = store
        .list_template_versions(
            template.id,
            Some((versions[0].created_at, versions[0].id)),
            10,
        )
        .await
        .unwrap();
    assert_eq!(older.len(), 1);

    // Workspaces with owner and template names, filtered and newest first.
    let all = WorkspaceListQuery {
        organization_ids: vec![org],
        limit: 10,
        ..Default::default()
    };
    let listed = store.list_workspaces(&all).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].owner_name.as_str(),
            listed[0].template_name.as_str()
        ),
        ("ada", "shell")
    );
    assert!(listed[0].updated_at >= first_build.created_at);
    for (query, expected) in [
        (
            WorkspaceListQuery {
                owner_id: Some(Uuid::new_v4()),
                ..all.clone()
            },
            0,
        ),
        (
            WorkspaceListQuery {
                name_query: "DE".into(),
                ..all.clone()
            },
            1,
        ),
        (
            WorkspaceListQuery {
                template_id: Some(other.template_id),
                ..all.clone()
            },
            0,
        ),
        (
            WorkspaceListQuery {
                organization_ids: vec![],
                ..all.clone()
            },
            0,
        ),
        (
            WorkspaceListQuery {
                after: Some((workspace.created_at, workspace.id)),
                ..all.clone()
            },
            0,
        ),
    ] {
        assert_eq!(
            store.list_workspaces(&query).await.unwrap().len(),
            expected,
            "{query:?}"
        );
    }

    // A template in use cannot be deleted; after the workspace's delete build it can.
    let refused = store.delete_template(template.id).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Precondition(_)),
        "{refused:?}"
    );
    let build_job = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    assert_eq!(build_job.id, first_build.job_id);
    store
        .append_job_logs(
            build_job.id,
            &[
                ("info".into(), "Setting up".into(), "one".into()),
                ("warn".into(), "Setting up".into(), "two".into()),
            ],
        )
        .await
        .unwrap();
    let logs = store.job_logs(build_job.id, 0, 10).await.unwrap();
    assert_eq!(
        logs.iter()
            .map(|l| (l.level.as_str(), l.output.as_str()))
            .collect::<Vec<_>>(),
        [("info", "one"), ("warn", "two")]
    );
    let after = store.job_logs(build_job.id, logs[0].id, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].output, "two");
    store.complete_job(build_job.id, "", "").await.unwrap();
    let delete = store
        .new_build(
            workspace.id,
            WorkspaceTransition::Delete,
            Some(user),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    assert_eq!(delete.reason, "initiator");
    store.complete_job(delete.job_id, "", "").await.unwrap();
    assert!(store.list_workspaces(&all).await.unwrap().is_empty());
    let gone = store
        .workspace_listing(workspace.id)
        .await
        .unwrap()
        .unwrap();
    assert!(gone.workspace.deleted);
    let deleted = store.delete_template(template.id).await.unwrap();
    assert!(deleted.deleted);
    let missing = store.delete_template(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
}

/// A version renamed, for a second push of the same template.
trait NewTemplateVersionExt {
    fn named(self, name: &str) -> Self;
}

impl NewTemplateVersionExt for chatstore::templates::NewTemplateVersion {
    fn named(mut self, name: &str) -> Self {
        self.version_name = name.into();
        self
    }
}
