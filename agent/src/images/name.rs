//! Image names: what the store accepts, and the record file each name maps to.

use super::ImageError;

/// The longest accepted name, so that its record file name stays under the
/// file-system limit of 255 bytes even with every `/` spelled `%2F`.
const MAX_NAME_LEN: usize = 80;

/// Checks that `name` is a sane image reference: `/`-separated components of ASCII
/// letters, digits, `.`, `_` and `-`, none starting with `.` or `-` (so no `.`,
/// `..` or hidden names), with an optional `:port` on the first component and an
/// optional `:tag` on the last: `busybox`, `library/busybox:1.36`,
/// `localhost:5000/busybox:latest`.
pub fn validate(name: &str) -> Result<(), ImageError> {
    let invalid = |reason: &str| ImageError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(&format!("it is longer than {MAX_NAME_LEN} bytes")));
    }
    let components: Vec<&str> = name.split('/').collect();
    let last = components.len() - 1;
    for (i, component) in components.iter().enumerate() {
        let parts: Vec<&str> = component.split(':').collect();
        if parts.len() > 2 || (parts.len() == 2 && i != 0 && i != last) {
            return Err(invalid(
                "':' may only separate a tag from the last component (or a port from the first)",
            ));
        }
        for part in parts {
            if part.is_empty() {
                return Err(invalid("it has an empty component, tag or port"));
            }
            if part.starts_with('.') || part.starts_with('-') {
                return Err(invalid(&format!(
                    "component '{part}' starts with '{}'",
                    &part[..1]
                )));
            }
            if let Some(bad) = part
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(invalid(&format!(
                    "'{bad}' is not allowed (use letters, digits, '.', '_', '-', '/' and one ':tag')"
                )));
            }
        }
    }
    Ok(())
}

/// The file name of the record of the (valid) image `name` in the store's `images/`.
/// `%` never occurs in a valid name, so the mapping is one to one.
pub fn record_file_name(name: &str) -> String {
    format!("{}.json", name.replace('/', "%2F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_references() {
        for name in [
            "busybox",
            "library/busybox:1.36",
            "docker.io/library/busybox:latest",
            "localhost:5000/busybox:1.36",
            "my_image-2",
        ] {
            assert!(validate(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn refuses_paths_and_odd_characters() {
        for name in [
            "",
            "..",
            "../etc/passwd",
            "library/../x",
            "/busybox",
            "busybox/",
            "a//b",
            ".hidden",
            "a b",
            "a%2Fb",
            "a:b:c",
            "a/b:c/d",
            "busybox:",
            "-flag",
        ] {
            assert!(validate(name).is_err(), "{name:?} should be refused");
        }
        assert!(validate(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn record_names_are_flat() {
        assert_eq!(
            record_file_name("library/busybox:1.36"),
            "library%2Fbusybox:1.36.json"
        );
    }
}
