//! [`Timestamp`]: Marathon's versions and instants, `2026-11-21T12:00:00.000Z`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with millisecond precision, ordered, printed as Marathon prints
/// versions. App versions are timestamps: a newer version is a later instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(chrono::DateTime<chrono::Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_millis(chrono::Utc::now().timestamp_millis())
    }

    pub fn from_millis(millis: i64) -> Self {
        Timestamp(chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| Self::from_millis(t.timestamp_millis()))
            .map_err(|e| format!("{raw:?} is not an ISO 8601 instant: {e}"))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Timestamp::parse(&raw).map_err(serde::de::Error::custom)
    }
}
