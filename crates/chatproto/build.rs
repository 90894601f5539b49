//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates prost messages,
//! plus tonic clients and servers when the `grpc` feature is on.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

/// File name (inside `OUT_DIR`) of the encoded descriptor set served by gRPC reflection.
const DESCRIPTOR_FILE: &str = "chatd_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Cargo exposes enabled features to build scripts as CARGO_FEATURE_<NAME>.
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();

    // Every .proto file under proto/ is part of the API (sorted, so builds are reproducible).
    let mut files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let descriptors = protox::Compiler::new([&proto_root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();

    // Reflection does not need comments; keep the embedded set small.
    let mut for_reflection = descriptors.clone();
    for file in &mut for_reflection.file {
        file.source_code_info = None;
    }
    fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        for_reflection.encode_to_vec(),
    )?;

    // Every message implements `prost::Name`, so a client can name a message's protobuf type
    // (`chatd.v1.Chat`) without writing the string by hand.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .build_transport(grpc)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}

/// Appends the paths (relative to `root`, with `/` separators) of the .proto files under `dir`.
fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            let relative = path.strip_prefix(root)?;
            let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}
