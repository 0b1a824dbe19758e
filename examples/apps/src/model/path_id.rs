//! [`PathId`]: Marathon's absolute, slash-separated ids of apps and groups.

use serde::{Deserialize, Serialize};

/// An absolute id such as `/prod/web`, normalised: a leading `/`, no trailing `/`,
/// no empty, `.` or `..` segments. The root group is `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PathId(String);

impl PathId {
    /// The root group, `/`.
    pub fn root() -> Self {
        PathId("/".to_string())
    }

    /// Parses `raw` relative to `base` (Marathon resolves `web` in group `/prod`
    /// to `/prod/web`, and `../db` to `/db`). Segments must match
    /// `^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$`.
    pub fn parse_relative(raw: &str, base: &PathId) -> Result<PathId, String> {
        let mut segments: Vec<&str> = if raw.starts_with('/') {
            Vec::new()
        } else {
            base.segments().collect()
        };
        for segment in raw.split('/').filter(|s| !s.is_empty()) {
            match segment {
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(format!("{raw:?} leaves the root group"));
                    }
                }
                s if valid_segment(s) => segments.push(s),
                s => {
                    return Err(format!(
                        "path contains invalid characters (allowed: lowercase letters, digits, hyphens, \".\", \"..\"): {s:?}"
                    ));
                }
            }
        }
        Ok(PathId(format!("/{}", segments.join("/"))))
    }

    /// Parses an absolute id (a missing leading `/` is added, as Marathon does).
    pub fn parse(raw: &str) -> Result<PathId, String> {
        Self::parse_relative(raw, &PathId::root())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The group this id is in (`/` for a top-level id and for the root).
    pub fn parent(&self) -> PathId {
        match self.0.rfind('/') {
            Some(0) | None => PathId::root(),
            Some(i) => PathId(self.0[..i].to_string()),
        }
    }

    /// True when `self` is `group` or lies under it.
    pub fn is_within(&self, group: &PathId) -> bool {
        group.is_root()
            || self.0 == group.0
            || (self.0.starts_with(&group.0) && self.0.as_bytes().get(group.0.len()) == Some(&b'/'))
    }

    /// The id as task ids carry it: `/prod/web` → `prod_web` (Marathon's form).
    pub fn safe_name(&self) -> String {
        self.segments().collect::<Vec<_>>().join("_")
    }
}

fn valid_segment(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    })
}

impl std::fmt::Display for PathId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
