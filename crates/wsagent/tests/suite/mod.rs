mod binary;
mod files;
mod grpc;
mod processes;
mod runtime;
