//! Marathon's label selectors (`GET /v2/apps?label=...`): comma-separated terms,
//! each `key` (has the label), `key==value`, `key!=value`, `key in (a, b)` or
//! `key notin (a, b)`. A backslash escapes the next character. As in Marathon, every
//! term but plain existence needs the label to be present.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector: all terms must match.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSelector {
    terms: Vec<Term>,
}

impl LabelSelector {
    pub fn parse(raw: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            chars: raw.chars().collect(),
            at: 0,
        };
        let mut terms = Vec::new();
        loop {
            terms.push(parser.term()?);
            parser.skip_spaces();
            match parser.next() {
                None => break,
                Some(',') => continue,
                Some(c) => return Err(parser.error(&format!("unexpected {c:?}"))),
            }
        }
        Ok(LabelSelector { terms })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|term| match term {
            Term::Exists(key) => labels.contains_key(key),
            Term::Equals(key, value) => labels.get(key) == Some(value),
            Term::NotEquals(key, value) => labels.get(key).is_some_and(|v| v != value),
            Term::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Term::NotIn(key, values) => labels.get(key).is_some_and(|v| !values.contains(v)),
        })
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn error(&self, what: &str) -> String {
        format!("Invalid label selector at position {}: {what}", self.at)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn starts_with(&self, text: &str) -> bool {
        text.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.at + i) == Some(&c))
    }

    /// A key or value: everything up to a space or delimiter, `\` escaping.
    fn word(&mut self) -> Result<String, String> {
        self.skip_spaces();
        let mut word = String::new();
        while let Some(c) = self.peek() {
            match c {
                '\\' => {
                    self.at += 1;
                    word.push(self.next().ok_or_else(|| self.error("dangling escape"))?);
                }
                c if c.is_whitespace() || "=!,()".contains(c) => break,
                c => {
                    word.push(c);
                    self.at += 1;
                }
            }
        }
        if word.is_empty() {
            Err(self.error("expected a label name or value"))
        } else {
            Ok(word)
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.skip_spaces();
        if self.next() != Some('(') {
            return Err(self.error("expected '('"));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.word()?);
            self.skip_spaces();
            match self.next() {
                Some(',') => continue,
                Some(')') => return Ok(values),
                _ => return Err(self.error("expected ',' or ')'")),
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        let key = self.word()?;
        self.skip_spaces();
        if self.starts_with("==") {
            self.at += 2;
            return Ok(Term::Equals(key, self.word()?));
        }
        if self.starts_with("!=") {
            self.at += 2;
            return Ok(Term::NotEquals(key, self.word()?));
        }
        match self.peek() {
            None | Some(',') => Ok(Term::Exists(key)),
            Some(_) => match self.word()?.as_str() {
                "in" => Ok(Term::In(key, self.set()?)),
                "notin" => Ok(Term::NotIn(key, self.set()?)),
                other => Err(self.error(&format!("unknown operator {other:?}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn terms_match_as_marathon_defines_them() {
        let app = labels(&[("env", "prod"), ("tier", "web")]);
        let cases = [
            ("env", true),
            ("missing", false),
            ("env==prod", true),
            ("env == dev", false),
            ("env!=dev", true),
            ("missing!=dev", false),
            ("env in (dev, prod)", true),
            ("env notin (dev,prod)", false),
            ("tier notin (db)", true),
            ("env==prod,tier==web", true),
            ("env==prod, tier==db", false),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&app), expected, "{selector}");
        }
    }

    #[test]
    fn escapes_and_errors() {
        let app = labels(&[("a,b", "x y")]);
        assert!(LabelSelector::parse(r"a\,b==x\ y").unwrap().matches(&app));
        for bad in [
            "",
            "env==",
            "env in dev",
            "env in (dev",
            "env like x",
            "a,,b",
            "env\\",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
