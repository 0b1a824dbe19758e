//! Validation: Marathon's 422 body, `{message, details: [{path, errors}]}`, and the
//! checks that produce it.

use serde::Serialize;

/// One invalid field: `path` is a JSON pointer-ish path as Marathon writes it
/// (`/cpus`, `/healthChecks(0)/portIndex`, `/` for the whole object).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

/// Marathon's 422 body.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ValidationErrors {
    pub message: String,
    pub details: Vec<Violation>,
}

impl ValidationErrors {
    /// The body for a single invalid field.
    pub fn one(path: impl Into<String>, error: impl Into<String>) -> Self {
        ValidationErrors {
            message: "Object is not valid".to_string(),
            details: vec![Violation {
                path: path.into(),
                errors: vec![error.into()],
            }],
        }
    }
}

/// Why a request body is not an app: not JSON at all (400) or an invalid app (422).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("Invalid JSON: {0}")]
    InvalidJson(String),
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Collects violations, merging the errors of one path as Marathon does.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<Violation>);

impl Violations {
    pub(crate) fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        match self.0.iter_mut().find(|v| v.path == path) {
            Some(violation) => {
                if !violation.errors.contains(&error) {
                    violation.errors.push(error);
                }
            }
            None => self.0.push(Violation {
                path,
                errors: vec![error],
            }),
        }
    }

    /// Adds `errors` found in a part of the document at `prefix` (`/apps(0)`).
    pub(crate) fn nested(&mut self, prefix: &str, errors: ValidationErrors) {
        for violation in errors.details {
            let path = if violation.path == "/" {
                prefix.to_string()
            } else {
                format!("{prefix}{}", violation.path)
            };
            for error in violation.errors {
                self.add(path.clone(), error);
            }
        }
    }

    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                message: "Object is not valid".to_string(),
                details: self.0,
            })
        }
    }
}
