//! Reading admin request bodies. Infinity's own guide sends `{"role": "leader", "name":
//! "Harry", }`, with a trailing comma that strict JSON refuses; the body is accepted with
//! trailing commas before `}` or `]` (outside strings) removed. Anything else must be JSON.

use serde_json::Value;
use strata_core::cluster::{AdminError, Role};

/// What `POST /admin/node/current` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRole {
    pub role: Role,
    pub name: Option<String>,
    pub address: Option<String>,
    /// `leader` only: lead even when the promotion guard refuses (records may be lost).
    pub force: bool,
}

/// `text` with every comma that directly precedes (after whitespace) a `}` or `]` removed,
/// leaving string contents alone.
#[must_use]
pub fn without_trailing_commas(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut output = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == '"' {
                in_string = false;
            }
        } else if character == '"' {
            in_string = true;
        } else if character == ',' {
            let rest = &bytes[index + 1..];
            let next = rest.iter().find(|byte| !byte.is_ascii_whitespace());
            if matches!(next, Some(b'}' | b']')) {
                continue;
            }
        }
        output.push(character);
    }
    output
}

/// Parses a set-role body: error 3067 for bad JSON, 3076 for a missing `role` (or a missing
/// `name`/`address` where the role needs it), 8007 for an unknown role.
///
/// # Errors
///
/// The [`AdminError`] the reference answers with, as above.
pub fn parse_set_role(body: &[u8]) -> Result<SetRole, AdminError> {
    let text = std::str::from_utf8(body)
        .map_err(|error| AdminError::invalid_json(&format!("body is not UTF-8: {error}")))?;
    let value: Value = serde_json::from_str(&without_trailing_commas(text))
        .map_err(|error| AdminError::invalid_json(&error.to_string()))?;
    let role = match value.get("role") {
        Some(Value::String(role)) => Role::parse(role)?,
        _ => return Err(AdminError::field_required("role")),
    };
    let text_field = |field: &str| -> Result<Option<String>, AdminError> {
        match value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(AdminError::field_required(field)),
        }
    };
    let name = text_field("name")?;
    let address = text_field("address")?;
    let force = match value.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(force)) => *force,
        Some(_) => return Err(AdminError::invalid_json("'force' must be true or false")),
    };
    Ok(SetRole { role, name, address, force })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_trailing_comma_is_accepted() {
        let body = br#" {
            "role" : "leader",
            "name" : "Harry",
        } "#;
        let parsed = parse_set_role(body).unwrap();
        assert_eq!(parsed.role, Role::Leader);
        assert_eq!(parsed.name.as_deref(), Some("Harry"));
        assert_eq!(parsed.address, None);
    }

    #[test]
    fn commas_inside_strings_stay() {
        assert_eq!(without_trailing_commas(r#"{"a":",}",}"#), r#"{"a":",}"}"#);
        assert_eq!(without_trailing_commas(r#"[1,2, ]"#), "[1,2 ]");
        assert_eq!(without_trailing_commas(r#"{"a":"\",}"}"#), r#"{"a":"\",}"}"#);
    }

    #[test]
    fn errors_carry_the_reference_codes() {
        assert_eq!(parse_set_role(b"{not json").unwrap_err().code, 3067);
        assert_eq!(parse_set_role(b"{}").unwrap_err().code, 3076);
        assert_eq!(parse_set_role(br#"{"role": 7}"#).unwrap_err().code, 3076);
        let unknown = parse_set_role(br#"{"role": "Boss"}"#).unwrap_err();
        assert_eq!((unknown.code, unknown.message.as_str()), (8007, "Invalid node role boss"));
        assert_eq!(parse_set_role(br#"{"role":"leader","name":3}"#).unwrap_err().code, 3076);
        assert_eq!(parse_set_role(b"\xff").unwrap_err().code, 3067);
    }
}
