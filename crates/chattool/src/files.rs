//! `read_file`, `write_file`, `edit_files` (spec/chattool.md §9.5–§9.7, §10.4). The agent
//! confines every path to the workspace roots (resolving symlinks, free of check-then-use races);
//! chatd checks lexically first when it knows the agent's working directory ([`check_path`]).
//! `write_file` and `edit_files` run under the idempotency ledger ([`crate::ledger`]).
//!
//! | Tool | Arguments | Result fields |
//! |---|---|---|
//! | `read_file` | `path`, `offset`? (1), `limit`? (2000) | `content` (line-numbered), `file_size`, `lines_read`, `total_lines` |
//! | `write_file` | `path`, `content` | `ok: true` |
//! | `edit_files` | `edits: [{path, old_text, new_text, replace_all?}]` (or that array as a JSON string) | `ok: true`, `files: [{path, diff}]` |
//!
//! Errors are text errors: the agent's message, or for `edit_files` a text ending with
//! `\nNo edits were applied.`

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use chatproto::wsagent::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conn::WorkspaceConn;
use crate::ledger::{Dispatch, ledgered, unknown_outcome};
use crate::tool::TypedTool;
use crate::{ToolContext, ToolResult};

/// Lexical normalisation: `.` dropped, `..` resolved, without touching any file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// chatd's lexical path check (§10.4): `path`, resolved against `root` when relative, must stay
/// inside `root` or one of `extra_roots`. `Err` is the model-facing text
/// `path "<path>" is outside the workspace root "<root>"`.
///
/// ```
/// use chattool::files::check_path;
/// assert!(check_path("/home/dev", &[], "src/main.rs").is_ok());
/// assert!(check_path("/home/dev", &["/tmp".into()], "/tmp/x").is_ok());
/// assert_eq!(
///     check_path("/home/dev", &[], "../other/.ssh/id").unwrap_err(),
///     r#"path "../other/.ssh/id" is outside the workspace root "/home/dev""#
/// );
/// ```
pub fn check_path(root: &str, extra_roots: &[String], path: &str) -> Result<(), String> {
    let primary = normalize(Path::new(root));
    let resolved = normalize(&primary.join(path));
    let inside = std::iter::once(primary.clone())
        .chain(extra_roots.iter().map(|r| normalize(Path::new(r))))
        .any(|r| resolved.starts_with(&r));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "path \"{path}\" is outside the workspace root \"{root}\""
        ))
    }
}

/// Applies [`check_path`] when confinement is on and the working directory is known.
fn confined(ctx: &ToolContext, conn: &dyn WorkspaceConn, path: &str) -> Result<(), String> {
    match conn.working_directory() {
        Some(root) if ctx.settings.files_confine => {
            check_path(root, &ctx.settings.files_extra_roots, path)
        }
        _ => Ok(()),
    }
}

/// Ends every `edit_files` error text.
pub const NO_EDITS_APPLIED: &str = "\nNo edits were applied.";

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// File path, relative to the workspace directory or absolute inside it.
    #[serde(default)]
    pub path: String,
    /// First line to return, 1-based (default 1).
    #[serde(default)]
    pub offset: Option<i64>,
    /// Most lines to return (default 2000).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `read_file`.
#[derive(Debug, Default)]
pub struct ReadFile;

#[async_trait]
impl TypedTool for ReadFile {
    type Args = ReadFileArgs;
    const NAME: &'static str = "read_file";
    const DESCRIPTION: &'static str = "Read a text file in the workspace. Each line is prefixed with its line number \
         (right-aligned to 6 columns and a tab). Use offset and limit to page through long files.";

    async fn run(&self, ctx: &ToolContext, args: ReadFileArgs) -> Result<ToolResult, ToolResult> {
        if args.path.trim().is_empty() {
            return Err(ToolResult::error("path is required"));
        }
        let conn = ctx.connection().await?;
        confined(ctx, conn.as_ref(), &args.path).map_err(ToolResult::error)?;
        Ok(
            match conn
                .read_file(pb::ReadFileRequest {
                    path: args.path,
                    offset: args.offset.filter(|o| *o >= 1).unwrap_or(1),
                    limit: args.limit.filter(|l| *l >= 1).unwrap_or(2000),
                })
                .await
            {
                Ok(r) => ToolResult::json(&serde_json::json!({
                    "content": r.content,
                    "file_size": r.file_size,
                    "lines_read": r.lines_read,
                    "total_lines": r.total_lines,
                })),
                Err(status) => ToolResult::error(status.message()),
            },
        )
    }
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// File path, relative to the workspace directory or absolute inside it. Parent
    /// directories are created.
    #[serde(default)]
    pub path: String,
    /// The whole new content.
    #[serde(default)]
    pub content: String,
}

/// `write_file`.
#[derive(Debug, Default)]
pub struct WriteFile;

#[async_trait]
impl TypedTool for WriteFile {
    type Args = WriteFileArgs;
    const NAME: &'static str = "write_file";
    const DESCRIPTION: &'static str = "Create or overwrite a file in the workspace with the given content (atomically; parent \
         directories are created). Use edit_files to change part of an existing file.";

    async fn run(&self, ctx: &ToolContext, args: WriteFileArgs) -> Result<ToolResult, ToolResult> {
        if args.path.trim().is_empty() {
            return Err(ToolResult::error("path is required"));
        }
        // The ledger first: a replayed completed call answers from it even when the workspace
        // is unreachable now. Writing the same content again is harmless, so an unfinished
        // replay simply writes.
        ledgered(ctx, Self::NAME, &args, |_| async {
            let conn = ctx.connection().await?;
            confined(ctx, conn.as_ref(), &args.path).map_err(ToolResult::error)?;
            match conn
                .write_file(pb::WriteFileRequest {
                    path: args.path.clone(),
                    content: args.content.clone().into_bytes(),
                    idempotency_key: ctx.tool_call_id.clone(),
                    chat_id: ctx.chat_key(),
                })
                .await
            {
                Ok(()) => Ok(ToolResult::json(&serde_json::json!({ "ok": true }))),
                Err(status) => Err(ToolResult::error(status.message())),
            }
        })
        .await
    }
}

/// One replacement.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct EditArg {
    /// File path.
    #[serde(default)]
    pub path: String,
    /// Text to find: an exact match, else line-wise ignoring trailing, then surrounding,
    /// whitespace. Must match once unless replace_all is set.
    #[serde(default)]
    pub old_text: String,
    /// Replacement text.
    #[serde(default)]
    pub new_text: String,
    /// Replace every match.
    #[serde(default)]
    pub replace_all: bool,
}

/// `edits`: the array, or a JSON string that encodes it (some models send that).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Edits {
    /// The edits.
    List(Vec<EditArg>),
    /// The edits as a JSON-encoded string.
    Encoded(String),
}

/// Arguments of `edit_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditFilesArgs {
    /// The edits, applied all or nothing, grouped by path and in order within a file.
    #[serde(default)]
    pub edits: Option<Edits>,
    /// Retired: use `edits`.
    #[serde(default)]
    #[schemars(skip)]
    pub files: Option<Value>,
}

fn edit_error(text: impl Into<String>) -> ToolResult {
    let mut text = text.into();
    if !text.ends_with(NO_EDITS_APPLIED) {
        text.push_str(NO_EDITS_APPLIED);
    }
    ToolResult::error(text)
}

fn edit_failure(text: impl Into<String>) -> Result<ToolResult, ToolResult> {
    Err(edit_error(text))
}

/// `edit_files`.
#[derive(Debug, Default)]
pub struct EditFiles;

#[async_trait]
impl TypedTool for EditFiles {
    type Args = EditFilesArgs;
    const NAME: &'static str = "edit_files";
    const DESCRIPTION: &'static str = "Apply search-and-replace edits to files in the workspace, all or nothing: if any edit \
         fails, no file changes. Returns a unified diff per file.";

    fn argument_error(&self, error: ToolResult) -> ToolResult {
        edit_error(error.content)
    }

    async fn run(&self, ctx: &ToolContext, args: EditFilesArgs) -> Result<ToolResult, ToolResult> {
        if args.files.is_some() && args.edits.is_none() {
            return edit_failure(
                "the \"files\" argument is no longer supported; pass \"edits\": [{\"path\", \"old_text\", \"new_text\"}]",
            );
        }
        let edits = match args.edits {
            None => Vec::new(),
            Some(Edits::List(edits)) => edits,
            Some(Edits::Encoded(text)) => match serde_json::from_str::<Vec<EditArg>>(&text) {
                Ok(edits) => edits,
                Err(e) => {
                    return edit_failure(format!("invalid arguments for edit_files: edits: {e}"));
                }
            },
        };
        if edits.is_empty() {
            return edit_failure("Add at least one edit to edits");
        }
        if let Some(i) = edits.iter().position(|e| e.path.trim().is_empty()) {
            return edit_failure(format!("edits[{i}].path is required"));
        }
        let edits = &edits;
        // The ledger first, as for `write_file`.
        ledgered(ctx, Self::NAME, edits, |dispatch| async move {
            let conn = ctx.connection().await?;
            for edit in edits {
                confined(ctx, conn.as_ref(), &edit.path).map_err(edit_error)?;
            }
            let replay = dispatch == Dispatch::Unfinished;
            match conn
                .edit_files(pb::EditFilesRequest {
                    edits: edits
                        .iter()
                        .map(|e| pb::FileEdit {
                            path: e.path.clone(),
                            old_text: e.old_text.clone(),
                            new_text: e.new_text.clone(),
                            replace_all: e.replace_all,
                        })
                        .collect(),
                    idempotency_key: ctx.tool_call_id.clone(),
                    chat_id: ctx.chat_key(),
                    // A replay asks what became of the batch and never applies it anew.
                    lookup_only: replay,
                })
                .await
            {
                Ok(r) => Ok(ToolResult::json(&serde_json::json!({
                    "ok": true,
                    "files": r.files.into_iter().map(|f| serde_json::json!({"path": f.path, "diff": f.diff})).collect::<Vec<_>>(),
                }))),
                Err(status) if replay && status.code() == chatproto::tonic::Code::NotFound => {
                    Ok(unknown_outcome())
                }
                Err(status) => Err(edit_error(status.message())),
            }
        })
        .await
    }
}
