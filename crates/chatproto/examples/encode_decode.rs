//! Build a `chatd.v1` message, encode it to protobuf bytes with prost and decode it back — what
//! a service storing or relaying chatd's errors does — and list the services in the embedded
//! descriptor set.
//!
//! Run with `cargo run -p chatproto --example encode_decode`.

#![allow(clippy::print_stdout)] // an example reports on stdout

use chatproto::chatd::v1::{ChatError, ErrorKind, ProviderKind, RetryStatus};
use chatproto::prost::Message as _;
use chatproto::prost_types::{Duration, FileDescriptorSet};

fn main() -> Result<(), chatproto::prost::DecodeError> {
    let err = ChatError {
        message: "Anthropic is temporarily overloaded.".to_owned(),
        detail: "Overloaded".to_owned(),
        kind: ErrorKind::Overloaded.into(),
        provider: ProviderKind::Anthropic.into(),
        retryable: true,
        status_code: 529,
        retry_status: RetryStatus::Exhausted.into(),
        attempts: 25,
        retry_after: Some(Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..ChatError::default()
    };

    let bytes = err.encode_to_vec();
    println!("encoded ChatError: {} bytes", bytes.len());

    let decoded = ChatError::decode(bytes.as_slice())?;
    // Enum fields are `i32` on the struct; the generated getters give the enum (an unknown
    // number reads as the default, `..._UNSPECIFIED`).
    println!(
        "decoded: kind={:?} provider={:?} retry_status={:?} status={} attempts={}",
        decoded.kind(),
        decoded.provider(),
        decoded.retry_status(),
        decoded.status_code,
        decoded.attempts
    );
    println!("round trip equal: {}", decoded == err);
    println!("proto enum name: {}", decoded.kind().as_str_name());

    // The descriptor set every gRPC reflection service needs, decoded with prost-types.
    let set = FileDescriptorSet::decode(chatproto::FILE_DESCRIPTOR_SET)?;
    for file in set.file.iter().filter(|f| !f.service.is_empty()) {
        for service in &file.service {
            println!(
                "service {}.{} ({} methods)",
                file.package(),
                service.name(),
                service.method.len()
            );
        }
    }
    Ok(())
}
