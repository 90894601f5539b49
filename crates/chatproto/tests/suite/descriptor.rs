//! Checks the compiled contracts: every service is present in the descriptor set served by
//! reflection, the RPCs the spec names exist, and every element of every .proto file is
//! documented.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use chatproto::prost::Message as _;
use chatproto::prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

fn embedded_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(chatproto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn services(set: &FileDescriptorSet) -> BTreeSet<String> {
    set.file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect()
}

fn methods(set: &FileDescriptorSet, service: &str) -> BTreeSet<String> {
    set.file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| (f, s)))
        .filter(|(f, s)| format!("{}.{}", f.package(), s.name()) == service)
        .flat_map(|(_, s)| s.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

#[test]
fn every_service_is_in_the_descriptor_set() {
    let found = services(&embedded_set());
    let expected: BTreeSet<String> = chatproto::SERVICE_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(found, expected);
    let listed: BTreeSet<String> = chatproto::SERVICE_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(listed, expected, "SERVICE_NAMES must list every service");
}

#[test]
fn chat_service_has_the_rpcs_of_the_spec() {
    let found = methods(&embedded_set(), "chatd.v1.ChatService");
    for rpc in [
        "CreateChat",
        "ListChats",
        "GetChat",
        "UpdateChat",
        "ListMessages",
        "SendMessage",
        "EditMessage",
        "DeleteQueuedMessage",
        "PromoteQueuedMessage",
        "InterruptChat",
        "SubmitToolResults",
        "CompactChat",
        "ClearChat",
        "ReconcileInvalidChat",
        "StreamChat",
        "WatchChats",
    ] {
        assert!(found.contains(rpc), "ChatService lacks {rpc}");
    }
    let relay = methods(&embedded_set(), "chatd.v1.ChatPartsRelay");
    assert!(relay.contains("StreamParts"));
}

#[test]
fn wsagent_has_the_process_and_file_rpcs() {
    let found = methods(&embedded_set(), "wsagent.v1.Agent");
    for rpc in [
        "StartProcess",
        "ProcessOutput",
        "ListProcesses",
        "SignalProcess",
        "ReadFile",
        "WriteFile",
        "EditFiles",
        "Health",
    ] {
        assert!(found.contains(rpc), "wsagent.v1.Agent lacks {rpc}");
    }
}

#[test]
fn the_embedded_set_includes_imported_well_known_types() {
    let names: HashSet<String> = embedded_set()
        .file
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert!(names.contains("google/protobuf/timestamp.proto"));
    assert!(names.contains("chatd/v1/chat.proto"));
}

/// Source-code-info path numbers (descriptor.proto field numbers).
mod path {
    pub(crate) const FILE_MESSAGE: i32 = 4;
    pub(crate) const FILE_ENUM: i32 = 5;
    pub(crate) const FILE_SERVICE: i32 = 6;
    pub(crate) const MESSAGE_FIELD: i32 = 2;
    pub(crate) const MESSAGE_NESTED: i32 = 3;
    pub(crate) const MESSAGE_ENUM: i32 = 4;
    pub(crate) const MESSAGE_ONEOF: i32 = 8;
    pub(crate) const ENUM_VALUE: i32 = 2;
    pub(crate) const SERVICE_METHOD: i32 = 2;
}

/// Every documentable element: (path in source info, human-readable name).
fn elements(set: &FileDescriptorSet, file: &str) -> Vec<(Vec<i32>, String)> {
    fn message(out: &mut Vec<(Vec<i32>, String)>, at: Vec<i32>, m: &DescriptorProto, name: String) {
        if m.options.as_ref().is_some_and(|o| o.map_entry()) {
            return; // synthesised for `map<,>` fields
        }
        out.push((at.clone(), name.clone()));
        for (i, f) in m.field.iter().enumerate() {
            out.push((
                child(&at, path::MESSAGE_FIELD, i),
                format!("{name}.{}", f.name()),
            ));
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields get a synthetic oneof whose name starts with `_`.
            if !o.name().starts_with('_') {
                out.push((
                    child(&at, path::MESSAGE_ONEOF, i),
                    format!("{name}.{}", o.name()),
                ));
            }
        }
        for (i, n) in m.nested_type.iter().enumerate() {
            message(
                out,
                child(&at, path::MESSAGE_NESTED, i),
                n,
                format!("{name}.{}", n.name()),
            );
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            enumeration(
                out,
                child(&at, path::MESSAGE_ENUM, i),
                e,
                format!("{name}.{}", e.name()),
            );
        }
    }
    fn enumeration(
        out: &mut Vec<(Vec<i32>, String)>,
        at: Vec<i32>,
        e: &EnumDescriptorProto,
        name: String,
    ) {
        out.push((at.clone(), name.clone()));
        for (i, v) in e.value.iter().enumerate() {
            out.push((
                child(&at, path::ENUM_VALUE, i),
                format!("{name}.{}", v.name()),
            ));
        }
    }
    fn child(at: &[i32], field: i32, index: usize) -> Vec<i32> {
        let mut p = at.to_vec();
        p.push(field);
        p.push(i32::try_from(index).expect("small index"));
        p
    }

    let f = set
        .file
        .iter()
        .find(|f| f.name() == file)
        .expect("file compiled");
    let mut out = Vec::new();
    for (i, m) in f.message_type.iter().enumerate() {
        message(
            &mut out,
            child(&[], path::FILE_MESSAGE, i),
            m,
            m.name().to_owned(),
        );
    }
    for (i, e) in f.enum_type.iter().enumerate() {
        enumeration(
            &mut out,
            child(&[], path::FILE_ENUM, i),
            e,
            e.name().to_owned(),
        );
    }
    for (i, s) in f.service.iter().enumerate() {
        let at = child(&[], path::FILE_SERVICE, i);
        out.push((at.clone(), s.name().to_owned()));
        for (j, m) in s.method.iter().enumerate() {
            out.push((
                child(&at, path::SERVICE_METHOD, j),
                format!("{}.{}", s.name(), m.name()),
            ));
        }
    }
    out
}

#[test]
fn every_proto_element_is_documented() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "chatd/v1/errors.proto",
        "chatd/v1/chat.proto",
        "chatd/v1/workspace.proto",
        "chatd/v1/admin.proto",
        "chatd/v1/agentapi.proto",
        "wsagent/v1/agent.proto",
    ];
    let set = protox::Compiler::new([&root])
        .expect("proto root")
        .include_source_info(true)
        .open_files(files)
        .expect("protos compile")
        .file_descriptor_set();

    let mut undocumented = Vec::new();
    for file in files {
        let info = set
            .file
            .iter()
            .find(|f| f.name() == file)
            .and_then(|f| f.source_code_info.clone())
            .expect("source info kept");
        let documented: HashSet<Vec<i32>> = info
            .location
            .iter()
            .filter(|l| !l.leading_comments().trim().is_empty())
            .map(|l| l.path.clone())
            .collect();
        for (p, name) in elements(&set, file) {
            if !documented.contains(&p) {
                undocumented.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "undocumented proto elements:\n{}",
        undocumented.join("\n")
    );
}
