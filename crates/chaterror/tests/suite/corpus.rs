//! The fixture corpus of spec/chaterror.md §15(b): real provider error payloads (HTTP bodies
//! with headers, SSE error events, `response.failed` objects, HTTP/2 resets) and their expected
//! classification. Extend it whenever a new structured mapping is added.

use chaterror::{
    Http2ErrorCode, Http2StreamReset, Provider, ProviderHttpError, ProviderStreamError, ResetOrigin,
};
use serde_json::Value;

use crate::support::*;

const CORPUS: &str = include_str!("../fixtures/provider_errors.json");

fn input(case: &Value) -> BoxError {
    if let Some(http) = case.get("http") {
        let body = match &http["body"] {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let mut err = ProviderHttpError::new(
            http["status"].as_u64().unwrap() as u16,
            http["message"].as_str().unwrap(),
        )
        .with_body(body);
        for header in http["headers"].as_array().unwrap() {
            err = err.with_header(header[0].as_str().unwrap(), header[1].as_str().unwrap());
        }
        return boxed(err);
    }
    if let Some(stream) = case.get("stream") {
        return boxed(ProviderStreamError {
            provider: Provider::from_wire(stream["provider"].as_str().unwrap()),
            error_type: stream["type"].as_str().unwrap().to_owned(),
            code: stream["code"].as_str().unwrap().to_owned(),
            message: stream["message"].as_str().unwrap().to_owned(),
            status: stream["status"].as_u64().unwrap() as u16,
        });
    }
    let h2 = &case["h2"];
    boxed(Http2StreamReset {
        stream_id: h2["stream_id"].as_u64().unwrap() as u32,
        code: Http2ErrorCode(h2["code"].as_u64().unwrap() as u32),
        origin: if h2["peer"].as_bool().unwrap() {
            ResetOrigin::Peer
        } else {
            ResetOrigin::Local { cause: None }
        },
    })
}

#[test]
fn every_fixture_classifies_as_recorded() {
    let cases: Vec<Value> = serde_json::from_str(CORPUS).unwrap();
    assert!(cases.len() >= 20, "the corpus shrank");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let c = run(&input(case));
        let expect = &case["expect"];
        let mut check = |field: &str, ok: bool, got: String| {
            if !ok {
                failures.push(format!("{name}: {field} was {got}"));
            }
        };
        let kind = c.kind.map(|k| k.as_str()).unwrap_or("");
        check("kind", expect["kind"] == kind, kind.to_owned());
        check(
            "retryable",
            expect["retryable"] == c.retryable,
            c.retryable.to_string(),
        );
        check(
            "status",
            expect["status"] == c.status_code,
            c.status_code.to_string(),
        );
        if let Some(source) = expect.get("source") {
            check(
                "source",
                source == c.source.as_str(),
                c.source.as_str().to_owned(),
            );
        }
        if let Some(provider) = expect.get("provider") {
            let got = c.provider.map(|p| p.as_str()).unwrap_or("");
            check("provider", provider == got, got.to_owned());
        }
        if let Some(detail) = expect.get("detail") {
            check("detail", detail == c.detail.as_str(), c.detail.clone());
        }
        if let Some(excluded) = expect.get("detail_excludes").and_then(Value::as_str) {
            check(
                "detail",
                !c.detail.contains(excluded) && !c.message.contains(excluded),
                c.detail.clone(),
            );
        }
        if let Some(code) = expect.get("provider_code") {
            let got = c.provider_code.clone().unwrap_or_default();
            check("provider_code", code == got.as_str(), got);
        }
        if let Some(ms) = expect.get("retry_after_ms") {
            let got = c.retry_after.as_millis() as u64;
            check("retry_after_ms", ms == got, got.to_string());
        }
        if let Some(sub) = expect.get("sub_reason") {
            let got = c.sub_reason.map(|s| s.as_str()).unwrap_or("");
            check("sub_reason", sub == got, got.to_owned());
        }
        if let Some(broken) = expect.get("chain_broken") {
            check(
                "chain_broken",
                broken == c.chain_broken,
                c.chain_broken.to_string(),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
