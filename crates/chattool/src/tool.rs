//! The `Tool` abstraction, and [`TypedTool`], the convenient way to write one: typed arguments
//! (their schema generated, their parsing done) and `?` for early text errors.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::args::{parse_args, schema_for};
use crate::{ToolContext, ToolResult};

/// A model-facing tool.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by.
    fn name(&self) -> &'static str;
    /// What the model is told about it.
    fn description(&self) -> &'static str;
    /// The JSON Schema of its arguments (see [`crate::args::schema_for`]).
    fn parameters(&self) -> serde_json::Value;
    /// Runs it. `args` is the model's JSON text; bad arguments are a text error, never a panic.
    async fn call(&self, ctx: &ToolContext, args: &str) -> ToolResult;
}

/// A tool with typed arguments; every `TypedTool` is a [`Tool`].
#[async_trait]
pub trait TypedTool: Send + Sync {
    /// Its arguments; their doc comments become the schema's descriptions.
    type Args: DeserializeOwned + JsonSchema + Send;
    /// The name the model calls it by.
    const NAME: &'static str;
    /// What the model is told about it.
    const DESCRIPTION: &'static str;

    /// Runs it; `Err` is returned as is (usually a text error).
    async fn run(&self, ctx: &ToolContext, args: Self::Args) -> Result<ToolResult, ToolResult>;

    /// The result for arguments that do not parse (a text error naming the problem).
    fn argument_error(&self, error: ToolResult) -> ToolResult {
        error
    }
}

#[async_trait]
impl<T: TypedTool> Tool for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn description(&self) -> &'static str {
        T::DESCRIPTION
    }

    fn parameters(&self) -> serde_json::Value {
        schema_for::<T::Args>()
    }

    async fn call(&self, ctx: &ToolContext, args: &str) -> ToolResult {
        match parse_args::<T::Args>(T::NAME, args) {
            Ok(args) => self.run(ctx, args).await.unwrap_or_else(|e| e),
            Err(e) => self.argument_error(e),
        }
    }
}
