mod chat_tools;
mod engine;
mod resolver;
mod shared_limits;
mod tool_waits;
