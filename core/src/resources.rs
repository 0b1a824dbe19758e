//! Resource arithmetic: the one place that adds, subtracts and compares resources.
//!
//! Scalars are held in fixed point (thousandths), as Mesos does since 1.1, so that
//! adding and subtracting 0.1 cpus a thousand times gives back exactly what it started
//! with; every comparison the allocator makes is therefore exact. Ranges (ports) are
//! sorted, disjoint, inclusive intervals. Sets are ordered string sets. Each entry is
//! keyed by (name, role); the unreserved role is `*`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use agora_proto as pb;

use crate::limits;

/// The role of unreserved resources.
pub const UNRESERVED_ROLE: &str = "*";

/// Scalars are stored in thousandths.
const SCALE: f64 = 1000.0;

/// Why resources could not be built or changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource '{name}': {reason}")]
    Invalid { name: String, reason: String },
    #[error("resource '{name}' is given both as {first} and as {second}")]
    MixedKinds {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("cannot parse resources '{input}': {reason}")]
    Parse { input: String, reason: String },
    #[error("not enough {0} to subtract")]
    Insufficient(String),
}

/// (name, role): what a quantity is of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub name: String,
    /// `*` for unreserved.
    pub role: String,
}

/// An amount of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quantity {
    /// Thousandths of a unit; never negative.
    Scalar(i64),
    Ranges(RangeSet),
    Set(BTreeSet<String>),
}

impl Quantity {
    fn kind(&self) -> &'static str {
        match self {
            Quantity::Scalar(_) => "a scalar",
            Quantity::Ranges(_) => "ranges",
            Quantity::Set(_) => "a set",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Quantity::Scalar(v) => *v == 0,
            Quantity::Ranges(r) => r.is_empty(),
            Quantity::Set(s) => s.is_empty(),
        }
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Invariant: sorted by start, `start <= end`, and `prev.end + 1 < next.start`.
    intervals: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_intervals(intervals: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new();
        for (begin, end) in intervals {
            set.insert(begin, end);
        }
        set
    }

    pub fn intervals(&self) -> &[(u64, u64)] {
        &self.intervals
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Number of values covered.
    pub fn count(&self) -> u64 {
        self.intervals
            .iter()
            .map(|(b, e)| e - b + 1)
            .fold(0u64, u64::saturating_add)
    }

    pub fn insert(&mut self, begin: u64, end: u64) {
        let (mut begin, mut end) = (begin.min(end), begin.max(end));
        let mut merged = Vec::with_capacity(self.intervals.len() + 1);
        for &(b, e) in &self.intervals {
            if e.saturating_add(1) < begin || end.saturating_add(1) < b {
                merged.push((b, e));
            } else {
                begin = begin.min(b);
                end = end.max(e);
            }
        }
        merged.push((begin, end));
        merged.sort_unstable();
        self.intervals = merged;
    }

    pub fn union(&mut self, other: &RangeSet) {
        for &(b, e) in &other.intervals {
            self.insert(b, e);
        }
    }

    pub fn contains_range(&self, begin: u64, end: u64) -> bool {
        self.intervals.iter().any(|&(b, e)| b <= begin && end <= e)
    }

    pub fn contains(&self, other: &RangeSet) -> bool {
        other
            .intervals
            .iter()
            .all(|&(b, e)| self.contains_range(b, e))
    }

    /// Removes `other`; values of `other` not present are ignored.
    pub fn remove(&mut self, other: &RangeSet) {
        for &(rb, re) in &other.intervals {
            let mut next = Vec::with_capacity(self.intervals.len() + 1);
            for &(b, e) in &self.intervals {
                if re < b || e < rb {
                    next.push((b, e));
                    continue;
                }
                if b < rb {
                    next.push((b, rb - 1));
                }
                if re < e {
                    next.push((re + 1, e));
                }
            }
            self.intervals = next;
        }
    }

    /// The first `n` values, as a set (for handing out ports).
    pub fn take_first(&self, n: u64) -> RangeSet {
        let mut left = n;
        let mut out = RangeSet::new();
        for &(b, e) in &self.intervals {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            let take = len.min(left);
            out.insert(b, b + take - 1);
            left -= take;
        }
        out
    }

    /// Every value, in order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.intervals.iter().flat_map(|&(b, e)| b..=e)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.intervals.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// A bag of resources. Empty quantities are never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Invariant: no entry `is_empty()`; a name has one kind across all its roles.
    entries: BTreeMap<ResourceKey, Quantity>,
}

fn to_fixed(name: &str, value: f64) -> Result<i64, ResourceError> {
    if !value.is_finite() {
        return Err(ResourceError::Invalid {
            name: name.into(),
            reason: format!("{value} is not a finite number"),
        });
    }
    if value < 0.0 {
        return Err(ResourceError::Invalid {
            name: name.into(),
            reason: format!("{value} is negative"),
        });
    }
    if value > limits::MAX_SCALAR {
        return Err(ResourceError::Invalid {
            name: name.into(),
            reason: format!("{value} exceeds the limit of {}", limits::MAX_SCALAR),
        });
    }
    Ok((value * SCALE).round() as i64)
}

fn normalize_role(role: &str) -> String {
    if role.is_empty() {
        UNRESERVED_ROLE.to_string()
    } else {
        role.to_string()
    }
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and sums protobuf resources (duplicates of one name and role add up).
    pub fn from_proto(resources: &[pb::Resource]) -> Result<Self, ResourceError> {
        if resources.len() > limits::MAX_RESOURCES {
            return Err(ResourceError::Invalid {
                name: "resources".into(),
                reason: format!(
                    "{} entries exceed the limit of {}",
                    resources.len(),
                    limits::MAX_RESOURCES
                ),
            });
        }
        let mut out = Resources::new();
        for r in resources {
            let name = r.name.trim();
            if name.is_empty() || name.len() > limits::MAX_NAME_LEN {
                return Err(ResourceError::Invalid {
                    name: r.name.clone(),
                    reason: "a resource name must be 1 to 64 bytes".into(),
                });
            }
            if r.role.len() > limits::MAX_ROLE_LEN {
                return Err(ResourceError::Invalid {
                    name: name.into(),
                    reason: "role longer than 255 bytes".into(),
                });
            }
            let quantity = match &r.value {
                None => {
                    return Err(ResourceError::Invalid {
                        name: name.into(),
                        reason: "no value (scalar, ranges or set) given".into(),
                    });
                }
                Some(pb::resource::Value::Scalar(v)) => Quantity::Scalar(to_fixed(name, *v)?),
                Some(pb::resource::Value::Ranges(ranges)) => {
                    if ranges.range.len() > limits::MAX_RANGES {
                        return Err(ResourceError::Invalid {
                            name: name.into(),
                            reason: format!("more than {} ranges", limits::MAX_RANGES),
                        });
                    }
                    let mut set = RangeSet::new();
                    for range in &ranges.range {
                        if range.begin > range.end {
                            return Err(ResourceError::Invalid {
                                name: name.into(),
                                reason: format!(
                                    "range {}-{} ends before it begins",
                                    range.begin, range.end
                                ),
                            });
                        }
                        set.insert(range.begin, range.end);
                    }
                    Quantity::Ranges(set)
                }
                Some(pb::resource::Value::Set(items)) => {
                    if items.item.len() > limits::MAX_SET_ITEMS
                        || items.item.iter().any(|i| i.len() > limits::MAX_ROLE_LEN)
                    {
                        return Err(ResourceError::Invalid {
                            name: name.into(),
                            reason: format!(
                                "a set holds at most {} items of at most 255 bytes",
                                limits::MAX_SET_ITEMS
                            ),
                        });
                    }
                    Quantity::Set(items.item.iter().cloned().collect())
                }
            };
            out.add_entry(
                ResourceKey {
                    name: name.into(),
                    role: normalize_role(&r.role),
                },
                quantity,
            )?;
        }
        Ok(out)
    }

    pub fn to_proto(&self) -> Vec<pb::Resource> {
        self.entries
            .iter()
            .map(|(key, q)| pb::Resource {
                name: key.name.clone(),
                role: key.role.clone(),
                reservation: None,
                value: Some(match q {
                    Quantity::Scalar(v) => pb::resource::Value::Scalar(*v as f64 / SCALE),
                    Quantity::Ranges(r) => pb::resource::Value::Ranges(pb::Ranges {
                        range: r
                            .intervals()
                            .iter()
                            .map(|&(begin, end)| pb::Range { begin, end })
                            .collect(),
                    }),
                    Quantity::Set(s) => pb::resource::Value::Set(pb::Set {
                        item: s.iter().cloned().collect(),
                    }),
                }),
            })
            .collect()
    }

    /// Parses Mesos' agent syntax: `cpus:4;mem:4096;ports:[31000-32000];disks:{a,b}`,
    /// with an optional role per entry: `cpus(eng):2`.
    pub fn parse(input: &str) -> Result<Self, ResourceError> {
        let err = |reason: String| ResourceError::Parse {
            input: input.to_string(),
            reason,
        };
        let mut out = Resources::new();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (lhs, value) = part
                .split_once(':')
                .ok_or_else(|| err(format!("'{part}' is not name:value")))?;
            let (name, role) = match lhs.split_once('(') {
                Some((name, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| err(format!("'{lhs}' has an unclosed role")))?;
                    (name.trim(), role.trim())
                }
                None => (lhs.trim(), UNRESERVED_ROLE),
            };
            if name.is_empty() {
                return Err(err(format!("'{part}' has no name")));
            }
            let value = value.trim();
            let quantity = if let Some(inner) = value.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("'{value}' has an unclosed range list")))?;
                let mut set = RangeSet::new();
                for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let (b, e) = r.split_once('-').unwrap_or((r, r));
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("'{r}' is not a range")))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("'{r}' is not a range")))?;
                    if b > e {
                        return Err(err(format!("range '{r}' ends before it begins")));
                    }
                    set.insert(b, e);
                }
                Quantity::Ranges(set)
            } else if let Some(inner) = value.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err(format!("'{value}' has an unclosed set")))?;
                Quantity::Set(
                    inner
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            } else {
                let v: f64 = value
                    .parse()
                    .map_err(|_| err(format!("'{value}' is not a number")))?;
                Quantity::Scalar(to_fixed(name, v)?)
            };
            out.add_entry(
                ResourceKey {
                    name: name.into(),
                    role: normalize_role(role),
                },
                quantity,
            )?;
        }
        Ok(out)
    }

    /// A scalar-only bag, e.g. `Resources::scalars(&[("cpus", 1.0), ("mem", 128.0)])`.
    pub fn scalars(items: &[(&str, f64)]) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for (name, v) in items {
            out.add_entry(
                ResourceKey {
                    name: (*name).into(),
                    role: UNRESERVED_ROLE.into(),
                },
                Quantity::Scalar(to_fixed(name, *v)?),
            )?;
        }
        Ok(out)
    }

    fn add_entry(&mut self, key: ResourceKey, quantity: Quantity) -> Result<(), ResourceError> {
        if let Some((other_key, other)) = self
            .entries
            .iter()
            .find(|(k, q)| k.name == key.name && q.kind() != quantity.kind())
        {
            return Err(ResourceError::MixedKinds {
                name: other_key.name.clone(),
                first: other.kind(),
                second: quantity.kind(),
            });
        }
        if quantity.is_empty() {
            return Ok(());
        }
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(key, quantity);
            }
            Some(existing) => match (existing, quantity) {
                (Quantity::Scalar(a), Quantity::Scalar(b)) => *a = a.saturating_add(b),
                (Quantity::Ranges(a), Quantity::Ranges(b)) => a.union(&b),
                (Quantity::Set(a), Quantity::Set(b)) => a.extend(b),
                _ => unreachable!("kinds were checked above"),
            },
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ResourceKey, &Quantity)> {
        self.entries.iter()
    }

    /// Adds `other` to `self`. Mixed kinds for one name are skipped (both sides were
    /// validated on construction, so this only happens across unrelated agents).
    pub fn add(&mut self, other: &Resources) {
        for (k, q) in &other.entries {
            let _ = self.add_entry(k.clone(), q.clone());
        }
    }

    /// True when every quantity in `other` is present in `self` (same name and role).
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .entries
            .iter()
            .all(|(k, q)| match (self.entries.get(k), q) {
                (Some(Quantity::Scalar(a)), Quantity::Scalar(b)) => a >= b,
                (Some(Quantity::Ranges(a)), Quantity::Ranges(b)) => a.contains(b),
                (Some(Quantity::Set(a)), Quantity::Set(b)) => b.is_subset(a),
                _ => false,
            })
    }

    /// Subtracts `other`, failing (and leaving `self` unchanged) unless contained.
    pub fn checked_sub(&mut self, other: &Resources) -> Result<(), ResourceError> {
        if !self.contains(other) {
            let missing = other
                .entries
                .keys()
                .find(|k| {
                    let mut one = Resources::new();
                    one.entries.insert((*k).clone(), other.entries[*k].clone());
                    !self.contains(&one)
                })
                .map(|k| k.name.clone())
                .unwrap_or_default();
            return Err(ResourceError::Insufficient(missing));
        }
        self.sub_saturating(other);
        Ok(())
    }

    /// Subtracts what of `other` is present; never goes below zero.
    pub fn sub_saturating(&mut self, other: &Resources) {
        for (k, q) in &other.entries {
            let Some(existing) = self.entries.get_mut(k) else {
                continue;
            };
            match (existing, q) {
                (Quantity::Scalar(a), Quantity::Scalar(b)) => *a = (*a - b).max(0),
                (Quantity::Ranges(a), Quantity::Ranges(b)) => a.remove(b),
                (Quantity::Set(a), Quantity::Set(b)) => a.retain(|i| !b.contains(i)),
                _ => {}
            }
            if self.entries.get(k).is_some_and(Quantity::is_empty) {
                self.entries.remove(k);
            }
        }
    }

    /// Total of a scalar across roles, in units.
    pub fn scalar(&self, name: &str) -> f64 {
        self.entries
            .iter()
            .filter(|(k, _)| k.name == name)
            .map(|(_, q)| match q {
                Quantity::Scalar(v) => *v as f64 / SCALE,
                _ => 0.0,
            })
            // An empty float sum is -0.0; adding 0.0 makes it print as 0.
            .sum::<f64>()
            + 0.0
    }

    /// Ranges of a resource across roles (e.g. all ports).
    pub fn ranges(&self, name: &str) -> RangeSet {
        let mut out = RangeSet::new();
        for (k, q) in &self.entries {
            if let (true, Quantity::Ranges(r)) = (k.name == name, q) {
                out.union(r);
            }
        }
        out
    }

    pub fn cpus(&self) -> f64 {
        self.scalar("cpus")
    }

    pub fn mem(&self) -> f64 {
        self.scalar("mem")
    }

    pub fn disk(&self) -> f64 {
        self.scalar("disk")
    }

    /// Only the entries usable by `role`: unreserved ones and those reserved to it.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|(k, _)| k.role == UNRESERVED_ROLE || k.role == role)
                .map(|(k, q)| (k.clone(), q.clone()))
                .collect(),
        }
    }

    /// Names of every scalar present, for share computations.
    pub fn scalar_names(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|(_, q)| matches!(q, Quantity::Scalar(_)))
            .map(|(k, _)| k.name.as_str())
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Fast paths for the master's allocator. One allocation pass visits tens of thousands
// of agents; these let it read fixed-point amounts directly and build each offer as
// one copy, instead of cloning and subtracting whole bags. General code should use
// the methods above.
// ---------------------------------------------------------------------------------

/// Thousandths per unit: `Quantity::Scalar(v)` holds `v / FIXED_POINT_SCALE` units.
pub const FIXED_POINT_SCALE: i64 = SCALE as i64;

impl Resources {
    /// Number of (name, role) entries; the positions [`Resources::pick`] passes.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// A copy of some of the entries, in entry order (the order of [`Resources::iter`]).
    /// `keep(position, key, quantity)` answers `None` to drop an entry; for a scalar,
    /// `Some(v)` keeps `min(v, what is there)` thousandths (0 or less drops it); for
    /// ranges and sets any `Some` keeps the entry whole. The result is therefore always
    /// contained in `self`, and keeps its invariants.
    pub fn pick(
        &self,
        mut keep: impl FnMut(usize, &ResourceKey, &Quantity) -> Option<i64>,
    ) -> Self {
        // Collecting sorted entries lets the map be built in bulk.
        let entries = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(position, (key, quantity))| {
                let amount = keep(position, key, quantity)?;
                let kept = match quantity {
                    Quantity::Scalar(have) => {
                        let v = amount.min(*have);
                        if v <= 0 {
                            return None;
                        }
                        Quantity::Scalar(v)
                    }
                    other => other.clone(),
                };
                Some((key.clone(), kept))
            })
            .collect();
        Resources { entries }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, q)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(&k.name)?;
            if k.role != UNRESERVED_ROLE {
                write!(f, "({})", k.role)?;
            }
            match q {
                Quantity::Scalar(v) => write!(f, ":{}", *v as f64 / SCALE)?,
                Quantity::Ranges(r) => write!(f, ":{r}")?,
                Quantity::Set(s) => {
                    let items: Vec<&str> = s.iter().map(String::as_str).collect();
                    write!(f, ":{{{}}}", items.join(","))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_mesos_agent_syntax() {
        let r = Resources::parse("cpus:4;mem:4096;disk:10000;ports:[31000-32000]").unwrap();
        assert_eq!(r.cpus(), 4.0);
        assert_eq!(r.mem(), 4096.0);
        assert_eq!(r.ranges("ports").count(), 1001);
        assert_eq!(
            r.to_string(),
            "cpus:4;disk:10000;mem:4096;ports:[31000-32000]"
        );
        let reserved = Resources::parse("cpus(eng):2;cpus:1").unwrap();
        assert_eq!(reserved.cpus(), 3.0);
        assert_eq!(reserved.allocatable_to("ops").cpus(), 1.0);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "cpus",
            "cpus:x",
            "cpus:-1",
            "ports:[5-1]",
            "cpus:1;cpus:[1-2]",
            "cpus:NaN",
        ] {
            assert!(Resources::parse(bad).is_err(), "{bad} should not parse");
        }
        let nan = pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(f64::NAN)),
            ..Default::default()
        };
        assert!(Resources::from_proto(&[nan]).is_err());
        let absurd = pb::Resource {
            name: "mem".into(),
            value: Some(pb::resource::Value::Scalar(1e300)),
            ..Default::default()
        };
        assert!(Resources::from_proto(&[absurd]).is_err());
    }

    #[test]
    fn subtraction_is_exact_in_fixed_point() {
        let mut total = Resources::parse("cpus:1").unwrap();
        let tenth = Resources::parse("cpus:0.1").unwrap();
        for _ in 0..10 {
            total.checked_sub(&tenth).unwrap();
        }
        assert!(total.is_empty());
        assert!(total.checked_sub(&tenth).is_err());
    }

    #[test]
    fn ports_are_taken_and_returned() {
        let mut free = Resources::parse("ports:[31000-31010]").unwrap();
        let two = Resources::parse("ports:[31000-31001]").unwrap();
        free.checked_sub(&two).unwrap();
        assert_eq!(free.ranges("ports").intervals(), &[(31002, 31010)]);
        assert!(free.checked_sub(&two).is_err());
        free.add(&two);
        assert_eq!(free.ranges("ports").intervals(), &[(31000, 31010)]);
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u32..8000,
            0u32..100_000,
            proptest::collection::vec((0u64..200, 0u64..20), 0..5),
        )
            .prop_map(|(cpus, mem, ports)| {
                let mut r =
                    Resources::scalars(&[("cpus", cpus as f64 / 1000.0), ("mem", mem as f64)])
                        .unwrap();
                let mut set = RangeSet::new();
                for (b, len) in ports {
                    set.insert(b, b + len);
                }
                let _ = r.add_entry(
                    ResourceKey {
                        name: "ports".into(),
                        role: "*".into(),
                    },
                    Quantity::Ranges(set),
                );
                r
            })
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in arb_resources(), b in arb_resources()) {
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            // Ranges may overlap, so only scalars are guaranteed to round-trip exactly.
            let mut back = sum.clone();
            back.sub_saturating(&b);
            prop_assert!((back.cpus() - a.cpus()).abs() < 1e-9);
            prop_assert!((back.mem() - a.mem()).abs() < 1e-9);
        }

        #[test]
        fn proto_round_trip(a in arb_resources()) {
            prop_assert_eq!(Resources::from_proto(&a.to_proto()).unwrap(), a);
        }

        #[test]
        fn pick_keeps_a_contained_part(a in arb_resources(), keep in proptest::collection::vec(-1i64..10_000_000, 3)) {
            let part = a.pick(|i, _, _| keep.get(i).copied().filter(|&v| v >= 0));
            prop_assert!(a.contains(&part));
            prop_assert!(part.iter().all(|(_, q)| !q.is_empty()));
        }
    }

    #[test]
    fn pick_shrinks_scalars_and_keeps_ranges_whole() {
        let r = Resources::parse("cpus:2;mem:1024;ports:[1-5];cpus(eng):1").unwrap();
        assert_eq!(r.entry_count(), 4);
        // Entry order: cpus(*), cpus(eng), mem, ports.
        let part = r.pick(|i, _, _| [Some(500), None, Some(0), Some(0)][i]);
        assert_eq!(part, Resources::parse("cpus:0.5;ports:[1-5]").unwrap());
        assert_eq!(FIXED_POINT_SCALE, 1000);
    }
}
