//! `--json` output: any response as its canonical proto3 JSON mapping, one document per line,
//! through the descriptors compiled into `chatproto` (so the JSON follows the contract, field
//! names and enum names included, without hand-written serialisers).

use std::io::Write;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use crate::error::CtlError;

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(chatproto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The JSON of `message`, its protobuf type named by `prost::Name` (e.g. `chatd.v1.Chat`).
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> Result<String, CtlError> {
    let full_name = M::full_name();
    let full_name = full_name.as_str();
    let internal = |what: String| CtlError::Output(std::io::Error::other(what));
    let descriptor = pool()
        .and_then(|p| p.get_message_by_name(full_name))
        .ok_or_else(|| internal(format!("no descriptor for {full_name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| internal(e.to_string()))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut out = serde_json::Serializer::new(Vec::new());
    dynamic
        .serialize_with_options(&mut out, &options)
        .map_err(|e| internal(e.to_string()))?;
    String::from_utf8(out.into_inner()).map_err(|e| internal(e.to_string()))
}

/// Prints `message` as one JSON line.
pub fn print<M: prost::Message + prost::Name>(message: &M) -> Result<(), CtlError> {
    let line = to_json(message)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").map_err(CtlError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatproto::chatd::v1 as pb;

    #[test]
    fn messages_use_the_contracts_field_and_enum_names() {
        let chat = pb::Chat {
            id: "c1".into(),
            title: "Hello".into(),
            status: pb::ChatStatus::Waiting.into(),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_str(&to_json(&chat).unwrap()).unwrap();
        assert_eq!(json["id"], "c1");
        assert_eq!(json["title"], "Hello");
        assert_eq!(json["status"], "CHAT_STATUS_WAITING");
        assert_eq!(json["archived"], false, "defaults are written out");
    }
}
