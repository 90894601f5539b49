//! Properties of spec/chaterror.md §15(e) and the issue: classification never panics, is
//! deterministic, keeps `detail` within 500 characters, never echoes URL credentials or an
//! `sk-` key, and never puts the raw error text in `message`.

use chaterror::{ProviderStreamError, classify};
use proptest::prelude::*;

use crate::support::*;

/// Arbitrary text mixed with the vocabulary the rules look for, so generated inputs reach deep
/// into the pipeline instead of always ending in the default branch.
fn error_text() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "status 429",
        "HTTP 503",
        "overloaded",
        "quota",
        "insufficient_quota",
        "forbidden",
        "timeout",
        "eof",
        "invalid model",
        "context length exceeded",
        "stream ID 503",
        "received from peer",
        "anthropic",
        "openai compatible",
        "azure openai",
        "previous response with id",
        "not found",
        "chat interrupted",
        "provider_disabled",
        ":503",
        "try again in 2s",
        "\n\n",
        "POST \"https://h/x\": 429 ",
        "é",
        "…",
    ]);
    prop::collection::vec(
        prop_oneof![any::<String>(), words.prop_map(str::to_owned)],
        0..8,
    )
    .prop_map(|parts| parts.join(" "))
}

fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{16,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_classifies_within_bounds(raw in error_text()) {
        let err = text(&raw);
        let c = run(&err);
        prop_assert!(c.detail.chars().count() <= 500);
        prop_assert_eq!(&c, &run(&err));
        if raw.contains("://") {
            prop_assert!(!c.detail.contains("://"), "fallback detail kept a URL: {:?}", c.detail);
        }
        if raw.trim().len() > 20 {
            prop_assert!(!c.message.contains(raw.trim()), "message echoes the raw error");
        }
        prop_assert_eq!(c.kind.is_none(), raw.is_empty());
    }

    #[test]
    fn arbitrary_bodies_and_headers_never_panic(
        status in any::<u16>(),
        message in error_text(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        retry_after in "\\PC{0,20}",
        retry_after_ms in "\\PC{0,20}",
        should_retry in "\\PC{0,8}",
    ) {
        let err = boxed(
            pe(&message, status)
                .with_body(body)
                .with_header("retry-after", retry_after)
                .with_header("retry-after-ms", retry_after_ms)
                .with_header("x-should-retry", should_retry),
        );
        let c = run(&err);
        prop_assert!(c.detail.chars().count() <= 500);
        prop_assert_eq!(&c, &run(&err));
    }

    #[test]
    fn json_bodies_with_long_messages_are_capped(message in "\\PC{0,2000}", code in "[a-z_]{0,30}") {
        let body = serde_json::json!({"error": {"message": message, "code": code}}).to_string();
        let c = run(&boxed(pe("", 400).with_body(body)));
        prop_assert!(c.detail.chars().count() <= 500);
    }

    #[test]
    fn url_credentials_never_reach_the_output(user in "[a-z]{3,10}", password in secret(), token in secret(), prefix in error_text()) {
        let url = format!("https://{user}:{password}@api.example.com/v1/messages?token={token}");
        let inputs = [
            text(&format!("{prefix} Post \"{url}\": status 503")),
            boxed(pe(&format!("{prefix} {url}"), 500)),
            boxed(pe("", 502).with_body(serde_json::json!({"error": {"message": format!("upstream {url} failed")}}).to_string())),
            boxed(ProviderStreamError { message: format!("see {url}"), code: "server_error".into(), ..Default::default() }),
        ];
        for err in &inputs {
            let c = run(err);
            for secret in [&password, &token] {
                prop_assert!(!c.detail.contains(secret.as_str()), "detail leaked {}: {:?}", secret, c.detail);
                prop_assert!(!c.message.contains(secret.as_str()));
            }
        }
    }

    #[test]
    fn api_keys_never_reach_the_output(key in "[A-Za-z0-9_]{16,48}", prefix in error_text()) {
        let key = format!("sk-{key}");
        let inputs = [
            text(&format!("{prefix} invalid key {key} rejected")),
            text(&format!("{prefix} Authorization: Bearer {key}")),
            boxed(pe(&format!("bad key {key}"), 400)),
            boxed(pe("", 401).with_body(serde_json::json!({"error": {"message": format!("Incorrect API key provided: {key}")}}).to_string())),
            boxed(pe("", 400).with_body(serde_json::json!({"message": format!("x-api-key: {key}")}).to_string())),
        ];
        for err in &inputs {
            let c = run(err);
            prop_assert!(!c.detail.contains(&key), "detail leaked the key: {:?}", c.detail);
            prop_assert!(!c.message.contains(&key));
        }
    }

    #[test]
    fn classify_is_the_same_on_every_thread(raw in error_text()) {
        let here = run(&text(&raw));
        let there = std::thread::spawn(move || classify(text(&raw).as_ref(), &ctx())).join().unwrap();
        prop_assert_eq!(here, there);
    }
}
