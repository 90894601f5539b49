//! Tool arguments: JSON Schemas generated from the Rust argument types, checked to suit both
//! providers' tool formats, and parsing that turns a malformed or mistyped argument into a text
//! error naming the problem — never a panic.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ToolResult;

/// The JSON Schema of an argument type, in the shape both providers accept: an object schema
/// with `properties`, subschemas inlined (no `$ref`), no `$schema` or `title` noise.
pub fn schema_for<T: JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Some(object) = value.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
        object.remove("definitions");
        object.remove("$defs");
        object
            .entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    value
}

/// Checks that a tool's parameter schema suits Anthropic's `input_schema` and OpenAI's function
/// `parameters`: a top-level `"type": "object"` with an object of `properties`, every
/// `required` name declared, and no `$ref` anywhere.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    let object = schema.as_object().ok_or("the schema is not an object")?;
    if object.get("type") != Some(&Value::String("object".into())) {
        return Err("the schema's type must be \"object\"".into());
    }
    let properties = object
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("the schema needs an object of properties")?;
    if let Some(required) = object.get("required") {
        let required = required.as_array().ok_or("required must be an array")?;
        for name in required {
            let name = name.as_str().ok_or("required names must be strings")?;
            if !properties.contains_key(name) {
                return Err(format!("required property {name:?} is not declared"));
            }
        }
    }
    fn no_refs(v: &Value) -> Result<(), String> {
        match v {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    return Err("the schema contains a $ref".into());
                }
                map.values().try_for_each(no_refs)
            }
            Value::Array(items) => items.iter().try_for_each(no_refs),
            _ => Ok(()),
        }
    }
    no_refs(schema)
}

/// Parses a tool's JSON arguments. Empty arguments mean `{}`. A malformed document or a
/// mistyped field becomes a text error such as
/// `invalid arguments for execute: invalid type: integer `5`, expected a string at line 1 column 14`.
pub fn parse_args<T: DeserializeOwned>(tool: &str, args: &str) -> Result<T, ToolResult> {
    let text = if args.trim().is_empty() { "{}" } else { args };
    serde_json::from_str(text)
        .map_err(|e| ToolResult::error(format!("invalid arguments for {tool}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Arguments of a test tool.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Args {
        /// The command.
        command: String,
        /// A nested option.
        nested: Option<Nested>,
        /// Flags.
        #[serde(default)]
        flags: Vec<String>,
    }

    /// A nested object.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Nested {
        /// A number.
        n: i64,
    }

    #[test]
    fn generated_schemas_suit_both_providers() {
        let schema = schema_for::<Args>();
        check_schema(&schema).unwrap();
        assert_eq!(
            schema["properties"]["command"]["description"],
            "The command."
        );
        assert_eq!(schema["required"], serde_json::json!(["command"]));
        assert!(!schema.to_string().contains("$ref"));
    }

    #[test]
    fn schemas_without_object_type_or_with_refs_are_refused() {
        assert!(check_schema(&serde_json::json!({"type": "string"})).is_err());
        let with_ref = serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}});
        assert!(check_schema(&with_ref).unwrap_err().contains("$ref"));
        let undeclared = serde_json::json!({"type": "object", "properties": {}, "required": ["a"]});
        assert!(check_schema(&undeclared).unwrap_err().contains("\"a\""));
    }

    #[test]
    fn wrong_arguments_are_text_errors_that_say_what_is_wrong() {
        let err = parse_args::<Args>("execute", r#"{"command": 5}"#).unwrap_err();
        assert!(err.is_error);
        assert!(
            err.content.starts_with(
                "invalid arguments for execute: invalid type: integer `5`, expected a string"
            ),
            "{}",
            err.content
        );
        let err = parse_args::<Args>("execute", "{not json").unwrap_err();
        assert!(
            err.content
                .starts_with("invalid arguments for execute: key must be a string"),
            "{}",
            err.content
        );
        let err = parse_args::<Args>("execute", "").unwrap_err();
        assert!(
            err.content.contains("missing field `command`"),
            "{}",
            err.content
        );
    }
}
