//! Agent attributes in Mesos' flag syntax: `rack:r1;zone:a`.

use agora_proto as pb;

use crate::limits::{self, LimitError};

/// Parses `name:value;name:value`. Names and values are trimmed; empty parts skipped.
pub fn parse(input: &str) -> Result<Vec<pb::Attribute>, LimitError> {
    let mut out = Vec::new();
    for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, text) = part
            .split_once(':')
            .ok_or_else(|| LimitError::new("attributes", format!("'{part}' is not name:value")))?;
        let (name, text) = (name.trim(), text.trim());
        if name.is_empty() {
            return Err(LimitError::new(
                "attributes",
                format!("'{part}' has no name"),
            ));
        }
        limits::bytes("attributes.name", name.len(), 128)?;
        limits::bytes("attributes.text", text.len(), 1024)?;
        out.push(pb::Attribute {
            name: name.into(),
            text: text.into(),
        });
    }
    limits::count("attributes", out.len(), limits::MAX_ATTRIBUTES)?;
    Ok(out)
}

/// Renders attributes back to `name:value;...`.
pub fn format(attributes: &[pb::Attribute]) -> String {
    attributes
        .iter()
        .map(|a| format!("{}:{}", a.name, a.text))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let a = super::parse("rack:r1; zone:a").unwrap();
        assert_eq!(super::format(&a), "rack:r1;zone:a");
        assert!(super::parse("rack").is_err());
    }
}
