//! Generated types for chatd's API contracts in `proto/`.
//!
//! This crate owns the `.proto` files' Rust form and nothing else: it knows no business rules,
//! does no I/O, and depends on no other chatd crate. The prost messages are always available;
//! the tonic clients and servers (and the `tonic` re-export) come with the default `grpc`
//! feature. Policy crates such as `chaterror` depend on it with `default-features = false`, so
//! the wire types reach them without a gRPC stack or an async runtime.
//!
//! Packages:
//! - [`chatd::v1`]: the control plane's API (chats, errors, templates, workspaces, admin, the
//!   workspace agents' reporting API, the internal part relay between replicas);
//! - [`wsagent::v1`]: the workspace agent's own service (processes and files).
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of every file, for gRPC reflection.
//!
//! ```
//! use chatproto::chatd::v1::{ChatError, ErrorKind, ProviderKind};
//!
//! let err = ChatError {
//!     message: "Anthropic is temporarily overloaded.".to_owned(),
//!     kind: ErrorKind::Overloaded.into(),
//!     provider: ProviderKind::Anthropic.into(),
//!     retryable: true,
//!     status_code: 529,
//!     ..Default::default()
//! };
//! assert_eq!(err.kind(), ErrorKind::Overloaded);
//! ```

pub use prost;
pub use prost_types;
#[cfg(feature = "grpc")]
pub use tonic;

/// A package's generated code, as module `v1` (the generated code is exempt from the docs lints).
macro_rules! generated_package {
    ($doc:literal, $file:literal) => {
        #[doc = $doc]
        #[allow(
            missing_docs,
            missing_debug_implementations,
            unreachable_pub,
            clippy::all,
            clippy::pedantic
        )]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}

/// The control plane's API, package `chatd.v1`.
pub mod chatd {
    generated_package!("Version 1 of the control plane's API.", "chatd.v1.rs");
}

/// The workspace agent's API, package `wsagent.v1`.
pub mod wsagent {
    generated_package!("Version 1 of the workspace agent's API.", "wsagent.v1.rs");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every file in `proto/` and the
/// well-known types they import, without source comments; register it with gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chatd_descriptor.bin"));

/// Fully qualified names of every gRPC service defined in `proto/`.
pub const SERVICE_NAMES: &[&str] = &[
    "chatd.v1.ChatService",
    "chatd.v1.ChatPartsRelay",
    "chatd.v1.TemplateService",
    "chatd.v1.WorkspaceService",
    "chatd.v1.AdminService",
    "chatd.v1.AgentApiService",
    "wsagent.v1.Agent",
];
