//! List the tools chatd offers a model — names, descriptions and JSON Schemas — in the shape a
//! provider's tool list takes, and call one the way an engine would, all without a database or
//! a workspace.
//!
//! Run with `cargo run -p chattool --example list_tools`.

#![allow(clippy::print_stdout)] // an example reports on stdout

use chattool::args::{check_schema, parse_args};
use chattool::process::ExecuteArgs;
use chattool::{ChatScope, ToolContext};
use serde_json::json;
use uuid::Uuid;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // What an Anthropic request's `tools` array would hold.
    let mut offered = Vec::new();
    for tool in chattool::all_tools() {
        let schema = tool.parameters();
        // Every schema suits both Anthropic's `input_schema` and OpenAI's `parameters`.
        let check = match check_schema(&schema) {
            Ok(()) => "ok".to_owned(),
            Err(problem) => format!("unsuitable: {problem}"),
        };
        let summary = tool.description().lines().next().unwrap_or_default();
        println!("{} (schema {check})\n  {summary}\n  {schema}", tool.name());
        offered.push(json!({
            "name": tool.name(),
            "description": tool.description(),
            "input_schema": schema,
        }));
    }
    println!(
        "a model request would carry {} tools, {} bytes of JSON",
        offered.len(),
        json!(offered).to_string().len()
    );

    // Calling a tool: the engine gives each call a context. This one has no database, no
    // provisioner and no workspace connection, so the tools answer with text errors for the
    // model rather than failing.
    let chat = ChatScope {
        id: Uuid::from_u128(1),
        owner_id: Uuid::from_u128(2),
        organization_id: Uuid::from_u128(3),
    };
    let ctx = ToolContext::new(chat, "call_1");
    let Some(execute) = chattool::all_tools()
        .into_iter()
        .find(|t| t.name() == "execute")
    else {
        return println!("no execute tool");
    };
    for args in [
        r#"{"command": 5}"#,
        r#"{"command": "cargo test", "timeout": "5m"}"#,
    ] {
        let result = execute.call(&ctx, args).await;
        println!(
            "execute {args} -> is_error={}: {}",
            result.is_error, result.content
        );
    }

    // The typed arguments can also be parsed on their own.
    match parse_args::<ExecuteArgs>("execute", r#"{"command": "ls", "run_in_background": true}"#) {
        Ok(args) => println!("parsed: {args:?}"),
        Err(result) => println!("error for the model: {}", result.content),
    }
}
