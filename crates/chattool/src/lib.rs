//! The model-facing workspace tools of chatd (spec/chattool.md, spec/recovery.md): twelve tools
//! over the store, the provisioner and a workspace-agent connection.
//!
//! - [`Tool`] / [`tool::TypedTool`]: name, description, a JSON Schema generated from the Rust
//!   argument type ([`args`]), and `call(ctx, args_json) -> ToolResult`; malformed arguments are
//!   a text error saying what was wrong, never a panic.
//! - [`ToolResult`]: the two failure shapes of §2.1 (text error, or JSON with an `error` key).
//! - [`ToolContext`]: the chat (owner, organization), the store and its notifications, the
//!   [`builds::WorkspaceBuilds`], the per-chat workspace mutex, the
//!   [`context::WorkspaceResolver`], the [`ToolSettings`] and the binding callback.
//! - The tools: [`templates`] (`list_templates`, `read_template`), [`lifecycle`]
//!   (`create_workspace`, `start_workspace`, `stop_workspace`), [`process`] (`execute`,
//!   `process_output`, `process_list`, `process_signal`) and [`files`] (`read_file`,
//!   `write_file`, `edit_files`). Each module's docs list its arguments and result fields.
//! - [`wait`]: event-driven build and readiness waits; [`ledger`]: the idempotency ledger that
//!   keeps a replayed side effect from running twice; [`duration`]: Go's duration grammar.
//!
//! ```
//! let names: Vec<&str> = chattool::all_tools().iter().map(|t| t.name()).collect();
//! assert_eq!(names.len(), 12);
//! assert!(names.contains(&"create_workspace"));
//! ```

pub mod args;
pub mod builds;
pub mod conn;
pub mod context;
pub mod duration;
pub mod files;
pub mod ledger;
pub mod lifecycle;
pub mod process;
pub mod readme;
mod result;
pub mod templates;
pub mod tool;
pub mod wait;

pub use context::{ChatScope, ToolContext, ToolSettings};
pub use result::ToolResult;
pub use tool::Tool;

/// Every tool, in the order they are offered to the model.
pub fn all_tools() -> Vec<Box<dyn Tool>> {
    let mut tools: Vec<Box<dyn Tool>> = vec![
        Box::new(templates::ListTemplates),
        Box::new(templates::ReadTemplate),
        Box::new(lifecycle::CreateWorkspace),
        Box::new(lifecycle::StartWorkspace),
        Box::new(lifecycle::StopWorkspace),
    ];
    tools.extend(workspace_tools());
    tools
}

/// The process and file tools (those that need a workspace connection), in offering order.
pub fn workspace_tools() -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(process::Execute),
        Box::new(process::ProcessOutput),
        Box::new(process::ProcessList),
        Box::new(process::ProcessSignal),
        Box::new(files::ReadFile),
        Box::new(files::WriteFile),
        Box::new(files::EditFiles),
    ]
}
