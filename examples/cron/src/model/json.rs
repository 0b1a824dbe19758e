//! Reading a `serde_json::Value` into a typed model while tracking where in the
//! document each value sits, so that a value of the wrong shape is answered as
//! Metronome (play-json) answers it: 422, `{"message": "Object is not valid",
//! "details": [{"path": "/run/cpus", "errors": ["error.expected.jsnumber"]}]}`.

use std::fmt;

use serde::de::{self, DeserializeOwned, Error as _, Visitor};
use serde_json::Value;

use super::validate::Violations;

/// Deserialises `value` as `T`; a shape error names the path of the offending
/// value, below `prefix` (`""` for the document itself, `/schedules(0)` for an
/// inlined schedule).
pub(crate) fn from_value<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
) -> Result<T, Violations> {
    T::deserialize(Tracked {
        value,
        path: prefix.to_string(),
    })
    .map_err(|e| {
        let path = e.path.unwrap_or_default();
        let mut violations = Violations::default();
        violations.add(
            if path.is_empty() {
                "/".to_string()
            } else {
                path
            },
            e.message,
        );
        violations
    })
}

/// A shape error; `path` is filled in by the innermost value that saw it.
#[derive(Debug)]
pub(crate) struct ShapeError {
    /// Where the error is, once known (play-json form: `/a/b(0)/c`).
    path: Option<String>,
    /// Appended to the path of the value that reports the error (a missing field is
    /// reported by its object but is located at the field).
    suffix: String,
    message: String,
}

impl ShapeError {
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(format!("{path}{}", self.suffix));
        }
        self
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        ShapeError {
            path: None,
            suffix: String::new(),
            message: message.to_string(),
        }
    }

    fn invalid_type(_unexpected: de::Unexpected, expected: &dyn de::Expected) -> Self {
        Self::custom(expected_code(&expected.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        ShapeError {
            path: None,
            suffix: format!("/{field}"),
            message: "error.path.missing".to_string(),
        }
    }
}

/// play-json's code for "expected a value of this kind", from serde's description
/// of what it expected.
fn expected_code(expected: &str) -> String {
    let kind = if expected.contains("bool") {
        "jsboolean"
    } else if [
        "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64",
    ]
    .iter()
    .any(|n| expected.contains(n))
        || expected.contains("integer")
        || expected.contains("number")
    {
        "jsnumber"
    } else if expected.contains("string") || expected.contains("char") {
        "jsstring"
    } else if expected.contains("sequence") || expected.contains("tuple") {
        "jsarray"
    } else if expected.contains("map") || expected.contains("struct") {
        "jsobject"
    } else {
        return format!("error.expected: {expected}");
    };
    format!("error.expected.{kind}")
}

/// A value and its path in the document.
struct Tracked<'de> {
    value: &'de Value,
    path: String,
}

impl<'de> Tracked<'de> {
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let path = self.path;
        let result = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                path: &path,
            }),
            Value::Object(map) => visitor.visit_map(Fields {
                fields: map.iter(),
                pending: None,
                path: &path,
            }),
        };
        result.map_err(|e| e.at(&path))
    }
}

impl<'de> de::Deserializer<'de> for Tracked<'de> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.visit(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            let path = self.path.clone();
            visitor.visit_some(self).map_err(|e| e.at(&path))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self.value {
            Value::String(s) => {
                let access = de::value::BorrowedStrDeserializer::<ShapeError>::new(s);
                visitor.visit_enum(access).map_err(|e| e.at(&self.path))
            }
            _ => Err(ShapeError::custom("error.expected.jsstring").at(&self.path)),
        }
    }

    /// Only objects are structs (serde would also read an array positionally).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        if self.value.is_object() {
            self.visit(visitor)
        } else {
            Err(ShapeError::custom("error.expected.jsobject").at(&self.path))
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Items<'a, 'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'a str,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = ShapeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        match self.items.next() {
            None => Ok(None),
            Some((index, value)) => {
                let path = format!("{}({index})", self.path);
                seed.deserialize(Tracked {
                    value,
                    path: path.clone(),
                })
                .map(Some)
                // Errors a type raises after reading its value have no path yet.
                .map_err(|e| e.at(&path))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Fields<'a, 'de> {
    fields: serde_json::map::Iter<'de>,
    /// The value of the key just returned, with its key.
    pending: Option<(&'de str, &'de Value)>,
    path: &'a str,
}

impl<'de> de::MapAccess<'de> for Fields<'_, 'de> {
    type Error = ShapeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ShapeError> {
        match self.fields.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.pending = Some((key.as_str(), value));
                let key = de::value::BorrowedStrDeserializer::<ShapeError>::new(key);
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ShapeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(ShapeError::custom(
                "a map value was asked for before its key",
            ));
        };
        let path = format!("{}/{key}", self.path);
        seed.deserialize(Tracked {
            value,
            path: path.clone(),
        })
        .map_err(|e| e.at(&path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Outer {
        cpus: f64,
        #[serde(default)]
        checks: Vec<Inner>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        maybe: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        port_index: i64,
    }

    struct Violation {
        path: String,
        errors: Vec<String>,
    }

    fn error(value: Value) -> Violation {
        let (path, errors) = from_value::<Outer>(&value, "")
            .unwrap_err()
            .into_details()
            .into_iter()
            .next()
            .unwrap();
        Violation { path, errors }
    }

    #[test]
    fn shape_errors_name_the_path_and_play_json_code() {
        let v = error(json!({"cpus": "x"}));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/cpus", "error.expected.jsnumber")
        );
        let v = error(json!({"cpus": 1, "checks": [{"portIndex": 0}, {"portIndex": true}]}));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/checks(1)/portIndex", "error.expected.jsnumber")
        );
        let v = error(json!({"cpus": 1, "checks": [{}]}));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/checks(0)/portIndex", "error.path.missing")
        );
        let v = error(json!({"cpus": 1, "env": {"A": 1}}));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/env/A", "error.expected.jsstring")
        );
        let v = error(json!({"cpus": 1, "checks": {}}));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/checks", "error.expected.jsarray")
        );
        let v = error(json!([1]));
        assert_eq!(
            (v.path.as_str(), v.errors[0].as_str()),
            ("/", "error.expected.jsobject")
        );
        let v = error(json!({"cpus": 1, "maybe": 70000}));
        assert_eq!(v.path, "/maybe");
    }

    #[test]
    fn well_formed_values_read_as_serde_json_reads_them() {
        let outer: Outer = from_value(
            &json!({
                "cpus": 2, "checks": [{"portIndex": -1}], "maybe": null, "env": {"A": "b"}
            }),
            "",
        )
        .unwrap();
        assert_eq!(outer.cpus, 2.0);
        assert_eq!(outer.checks[0].port_index, -1);
        assert_eq!(outer.maybe, None);
        assert_eq!(outer.env["A"], "b");
    }
}
