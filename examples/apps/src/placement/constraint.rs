//! Marathon's placement constraints: `[field, OPERATOR, value?]`.
//!
//! The field is the agent's hostname (`hostname` or `@hostname`), its fault domain
//! (`@region`, `@zone`: Agora agents declare these as the attributes `region` and
//! `zone`, the protocol having no separate domain message), or any other agent
//! attribute. An agent without the attribute satisfies only `UNLIKE`, as in Marathon.
//!
//! Whether an agent satisfies a constraint may depend only on the agent (`LIKE`,
//! `UNLIKE`, `IS`, `CLUSTER` with a value), or also on where the app's other
//! instances run (`UNIQUE`, `MAX_PER`, `GROUP_BY`, `CLUSTER` without a value); the
//! latter are evaluated by [`place`](fn@super::place) against counts it keeps.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// A constraint's operator, with Marathon's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// At most one instance per distinct value of the field.
    Unique,
    /// Every instance on the same value: the given one, or the first instance's.
    Cluster,
    /// Instances spread evenly over the values (optionally over at least N values).
    GroupBy,
    /// Only agents whose value fully matches the regular expression.
    Like,
    /// Only agents whose value does not fully match it (or that lack the attribute).
    Unlike,
    /// At most N instances per distinct value.
    MaxPer,
    /// Only agents whose value equals the given one (numbers to the thousandth).
    Is,
}

impl Operator {
    pub const ALL: [Operator; 7] = [
        Operator::Unique,
        Operator::Cluster,
        Operator::GroupBy,
        Operator::Like,
        Operator::Unlike,
        Operator::MaxPer,
        Operator::Is,
    ];

    /// Marathon's spelling: `UNIQUE`, `GROUP_BY`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
        }
    }

    fn parse(raw: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.as_str() == raw)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What part of an agent a constraint reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Hostname,
    /// An agent attribute, by name (`@region` and `@zone` become `region` and `zone`).
    Attribute(String),
}

impl Field {
    fn parse(raw: &str) -> Field {
        match raw {
            "hostname" | "@hostname" => Field::Hostname,
            "@region" => Field::Attribute("region".to_string()),
            "@zone" => Field::Attribute("zone".to_string()),
            other => Field::Attribute(other.to_string()),
        }
    }

    /// The agent's value for this field; `None` when it lacks the attribute.
    pub fn value_of<'a>(
        &self,
        hostname: &'a str,
        attributes: &'a BTreeMap<String, String>,
    ) -> Option<&'a str> {
        match self {
            Field::Hostname => Some(hostname),
            Field::Attribute(name) => attributes.get(name).map(String::as_str),
        }
    }
}

/// One parsed constraint. Built only by [`Constraint::parse`], so the operator's
/// value is known to be well formed.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// The field as the app gave it (`@hostname`, `rack`, ...), kept for messages.
    pub field: String,
    pub operator: Operator,
    /// The third element; `None` when absent or empty. Present for `LIKE`, `UNLIKE`,
    /// `MAX_PER` and `IS`; absent for `UNIQUE`; a number when given to `GROUP_BY`.
    pub value: Option<String>,
    /// What `field` reads.
    target: Field,
    /// For `LIKE`/`UNLIKE`: `value` anchored at both ends, so that it must match the
    /// whole field value, as Java's `String.matches` (Marathon) does.
    pattern: Option<Regex>,
    /// For `MAX_PER`: the limit; for `GROUP_BY`: the minimum number of distinct
    /// values (0 when not given).
    number: u32,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.operator == other.operator && self.value == other.value
    }
}

impl Constraint {
    /// Parses `[field, OPERATOR]` or `[field, OPERATOR, value]`. Errors are sentences
    /// for a person: what is wrong and what would be right.
    pub fn parse(fields: &[String]) -> Result<Constraint, String> {
        let (field, operator, value) = match fields {
            [field, operator] => (field, operator, None),
            [field, operator, value] => (field, operator, Some(value)),
            _ => {
                return Err(format!(
                    "a constraint is [field, OPERATOR] or [field, OPERATOR, value], not {} elements",
                    fields.len()
                ));
            }
        };
        if field.is_empty() {
            return Err(
                "the constraint's field is empty; use hostname or an agent attribute's name".into(),
            );
        }
        let operator = Operator::parse(operator).ok_or_else(|| {
            format!(
                "unknown constraint operator {operator:?}; use one of {}",
                Operator::ALL.map(Operator::as_str).join(", ")
            )
        })?;
        let value = value.filter(|v| !v.is_empty()).cloned();
        let mut constraint = Constraint {
            field: field.clone(),
            operator,
            value: None,
            target: Field::parse(field),
            pattern: None,
            number: 0,
        };
        let required = |value: &Option<String>| {
            value.clone().ok_or_else(|| {
                format!(
                    "{} needs a value: [{field:?}, {:?}, value]",
                    operator.as_str(),
                    operator.as_str()
                )
            })
        };
        match operator {
            Operator::Unique => {
                if let Some(value) = &value {
                    return Err(format!(
                        "UNIQUE takes no value, but {value:?} was given; use [{field:?}, \"UNIQUE\"]"
                    ));
                }
            }
            Operator::Cluster => {}
            Operator::GroupBy => {
                if let Some(value) = &value {
                    constraint.number = parse_count(operator, value)?;
                }
            }
            Operator::MaxPer => {
                constraint.number = parse_count(operator, &required(&value)?)?;
            }
            Operator::Like | Operator::Unlike => {
                let raw = required(&value)?;
                let pattern = Regex::new(&format!("^(?:{raw})$")).map_err(|e| {
                    format!(
                        "{} value {raw:?} is not a valid regular expression: {}",
                        operator.as_str(),
                        first_line(&e.to_string())
                    )
                })?;
                constraint.pattern = Some(pattern);
            }
            Operator::Is => {
                required(&value)?;
            }
        }
        constraint.value = value;
        Ok(constraint)
    }

    /// The constraint as JSON, e.g. `["hostname","UNIQUE"]`, for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.field.as_str(), self.operator.as_str()];
        if let Some(value) = &self.value {
            parts.push(value);
        }
        serde_json::to_string(&parts).unwrap_or_default()
    }

    /// What this constraint reads from an agent.
    pub fn target(&self) -> &Field {
        &self.target
    }

    /// `MAX_PER`'s limit, or `GROUP_BY`'s minimum number of values (0 if not given).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// True when the answer depends on where the app's instances already run.
    pub fn depends_on_instances(&self) -> bool {
        match self.operator {
            Operator::Unique | Operator::MaxPer | Operator::GroupBy => true,
            Operator::Cluster => self.value.is_none(),
            Operator::Like | Operator::Unlike | Operator::Is => false,
        }
    }

    /// The part of the decision that depends on the agent alone, given its value
    /// for [`Constraint::target`] (`None`: the attribute is missing). Operators that
    /// count instances pass here when the attribute is present; [`place`](fn@super::place)
    /// checks the counts.
    pub fn matches_agent(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return self.operator == Operator::Unlike;
        };
        match self.operator {
            Operator::Like => self.pattern.as_ref().is_some_and(|p| p.is_match(value)),
            Operator::Unlike => !self.pattern.as_ref().is_some_and(|p| p.is_match(value)),
            Operator::Is => self.value.as_deref().is_some_and(|v| same_value(v, value)),
            Operator::Cluster => self.value.as_deref().is_none_or(|v| v == value),
            Operator::Unique | Operator::MaxPer | Operator::GroupBy => true,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn parse_count(operator: Operator, value: &str) -> Result<u32, String> {
    value.trim().parse::<u32>().map_err(|_| {
        format!(
            "{} value {value:?} is not a number; give a whole number such as \"2\"",
            operator.as_str()
        )
    })
}

/// `IS` compares text exactly, and numbers to the nearest thousandth (Mesos' scalar
/// precision), so `2` is `2.000` but not `2.0005`.
fn same_value(wanted: &str, actual: &str) -> bool {
    if wanted == actual {
        return true;
    }
    match (wanted.trim().parse::<f64>(), actual.trim().parse::<f64>()) {
        (Ok(a), Ok(b)) if a.is_finite() && b.is_finite() => {
            (a * 1000.0).round() == (b * 1000.0).round()
        }
        _ => false,
    }
}

fn first_line(message: &str) -> &str {
    // The regex crate's errors are multi-line drawings; the last line says what is wrong.
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(parts: &[&str]) -> Result<Constraint, String> {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_operator_and_describes_it_back() {
        for (parts, json) in [
            (vec!["hostname", "UNIQUE"], r#"["hostname","UNIQUE"]"#),
            (vec!["rack", "CLUSTER", "r1"], r#"["rack","CLUSTER","r1"]"#),
            (vec!["rack", "CLUSTER"], r#"["rack","CLUSTER"]"#),
            (vec!["rack", "GROUP_BY", "3"], r#"["rack","GROUP_BY","3"]"#),
            (vec!["rack", "LIKE", "r[12]"], r#"["rack","LIKE","r[12]"]"#),
            (vec!["rack", "UNLIKE", "r9"], r#"["rack","UNLIKE","r9"]"#),
            (vec!["@zone", "MAX_PER", "2"], r#"["@zone","MAX_PER","2"]"#),
            (vec!["cores", "IS", "4"], r#"["cores","IS","4"]"#),
        ] {
            let c = parse(&parts).unwrap();
            assert_eq!(c.describe(), json);
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let err = parse(&["hostname", "UNIQ"]).unwrap_err();
        assert!(
            err.contains("unknown constraint operator \"UNIQ\""),
            "{err}"
        );
        assert!(err.contains("GROUP_BY"), "{err}");
        let err = parse(&["rack", "LIKE"]).unwrap_err();
        assert!(err.contains("LIKE needs a value"), "{err}");
        let err = parse(&["rack", "LIKE", ""]).unwrap_err();
        assert!(err.contains("LIKE needs a value"), "{err}");
        let err = parse(&["rack", "IS"]).unwrap_err();
        assert!(err.contains("IS needs a value"), "{err}");
        let err = parse(&["rack", "UNLIKE", "r[1"]).unwrap_err();
        assert!(err.contains("not a valid regular expression"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse(&["rack", "MAX_PER", "two"]).unwrap_err();
        assert!(
            err.contains("MAX_PER value \"two\" is not a number"),
            "{err}"
        );
        let err = parse(&["rack", "MAX_PER"]).unwrap_err();
        assert!(err.contains("MAX_PER needs a value"), "{err}");
        let err = parse(&["rack", "GROUP_BY", "-1"]).unwrap_err();
        assert!(
            err.contains("GROUP_BY value \"-1\" is not a number"),
            "{err}"
        );
        let err = parse(&["hostname", "UNIQUE", "x"]).unwrap_err();
        assert!(err.contains("UNIQUE takes no value"), "{err}");
        let err = parse(&["hostname"]).unwrap_err();
        assert!(err.contains("not 1 elements"), "{err}");
        let err = parse(&["", "UNIQUE"]).unwrap_err();
        assert!(err.contains("field is empty"), "{err}");
    }

    #[test]
    fn fields_read_hostname_and_attributes() {
        let attrs: BTreeMap<String, String> = [("zone", "a"), ("region", "eu"), ("rack", "r1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (field, want) in [
            ("hostname", Some("h1")),
            ("@hostname", Some("h1")),
            ("@zone", Some("a")),
            ("@region", Some("eu")),
            ("rack", Some("r1")),
            ("gpu", None),
        ] {
            let c = parse(&[field, "UNIQUE"]).unwrap();
            assert_eq!(c.target().value_of("h1", &attrs), want, "{field}");
        }
    }

    #[test]
    fn like_and_unlike_match_the_whole_value() {
        let like = parse(&["rack", "LIKE", "r[12]"]).unwrap();
        assert!(like.matches_agent(Some("r1")));
        assert!(
            !like.matches_agent(Some("r12")),
            "a prefix match is not a match"
        );
        assert!(
            !like.matches_agent(Some("xr1")),
            "a suffix match is not a match"
        );
        let alternation = parse(&["rack", "LIKE", "a|b"]).unwrap();
        assert!(
            !alternation.matches_agent(Some("ab")),
            "alternation is anchored as a whole"
        );
        assert!(alternation.matches_agent(Some("b")));
        let unlike = parse(&["rack", "UNLIKE", "r[12]"]).unwrap();
        assert!(!unlike.matches_agent(Some("r2")));
        assert!(unlike.matches_agent(Some("r21")));
    }

    #[test]
    fn a_missing_attribute_satisfies_only_unlike() {
        for op in Operator::ALL {
            let parts: Vec<&str> = match op {
                Operator::Unique | Operator::Cluster => vec!["rack", op.as_str()],
                _ => vec!["rack", op.as_str(), "1"],
            };
            let c = parse(&parts).unwrap();
            assert_eq!(c.matches_agent(None), op == Operator::Unlike, "{op}");
        }
    }

    #[test]
    fn is_compares_text_exactly_and_numbers_to_the_thousandth() {
        let is = parse(&["cores", "IS", "2"]).unwrap();
        assert!(is.matches_agent(Some("2")));
        assert!(is.matches_agent(Some("2.0")));
        assert!(is.matches_agent(Some("2.0004")));
        assert!(!is.matches_agent(Some("2.01")));
        let text = parse(&["os", "IS", "linux"]).unwrap();
        assert!(text.matches_agent(Some("linux")));
        assert!(!text.matches_agent(Some("Linux")));
    }

    #[test]
    fn cluster_with_a_value_is_decided_by_the_agent_alone() {
        let pinned = parse(&["rack", "CLUSTER", "r1"]).unwrap();
        assert!(!pinned.depends_on_instances());
        assert!(pinned.matches_agent(Some("r1")));
        assert!(!pinned.matches_agent(Some("r2")));
        let open = parse(&["rack", "CLUSTER"]).unwrap();
        assert!(open.depends_on_instances());
        assert!(open.matches_agent(Some("r2")));
    }
}
