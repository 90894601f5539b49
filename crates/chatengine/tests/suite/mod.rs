mod chat_tools;
mod engine;
mod resolver;
mod tool_waits;
