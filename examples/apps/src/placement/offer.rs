//! What placement reads: offers as agents with free resources per role, and where the
//! apps' instances already run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agora_sdk::proto;
use agora_sdk::{RangeSet, Resources};

use crate::model::PathId;

/// Thousandths per unit: scalars are compared in fixed point, as the master does, so
/// that what fits here fits there.
pub const FIXED_POINT: f64 = 1000.0;

/// An offer that cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("offer {offer_id:?}: {reason}")]
pub struct InvalidOffer {
    pub offer_id: String,
    pub reason: String,
}

/// The free resources of one role in an offer. Scalars are in thousandths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    /// `*` for unreserved resources, otherwise the role they are reserved to.
    pub role: String,
    pub cpus: i64,
    pub mem: i64,
    pub disk: i64,
    pub gpus: i64,
    pub ports: RangeSet,
}

impl Pool {
    /// An unreserved pool, in units (`mem` and `disk` in MB).
    pub fn unreserved(cpus: f64, mem: f64, disk: f64, gpus: f64, ports: RangeSet) -> Pool {
        Pool {
            role: "*".to_string(),
            cpus: to_fixed(cpus),
            mem: to_fixed(mem),
            disk: to_fixed(disk),
            gpus: to_fixed(gpus),
            ports,
        }
    }

    pub fn is_reserved(&self) -> bool {
        self.role != "*"
    }
}

/// Units to thousandths, rounded; what is negative or not finite counts as 0.
pub fn to_fixed(value: f64) -> i64 {
    if value.is_finite() && value > 0.0 {
        (value * FIXED_POINT).round() as i64
    } else {
        0
    }
}

/// One offer as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentOffer {
    pub offer_id: String,
    pub agent_id: String,
    pub hostname: String,
    /// The agent's attributes; the first of duplicate names wins (as Marathon's
    /// lookup does). Shared so that [`Location`]s of instances launched from this
    /// offer need not copy them.
    pub attributes: Arc<BTreeMap<String, String>>,
    /// The role the offer was allocated to; empty when the master did not say.
    pub allocation_role: String,
    /// Free resources by role; reserved roles first (in name order), unreserved last,
    /// because a framework's reservations are used before the shared pool (as the
    /// SDK's `OfferResources` does).
    pub pools: Vec<Pool>,
}

impl AgentOffer {
    /// An offer with unreserved resources only and no attributes, for tests and
    /// callers that build offers themselves.
    pub fn new(
        offer_id: impl Into<String>,
        agent_id: impl Into<String>,
        hostname: impl Into<String>,
        pool: Pool,
    ) -> AgentOffer {
        AgentOffer {
            offer_id: offer_id.into(),
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            attributes: Arc::default(),
            allocation_role: String::new(),
            pools: vec![pool],
        }
    }

    pub fn with_attribute(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes)
            .entry(name.into())
            .or_insert(text.into());
        self
    }

    /// Reads a protocol offer: resources validated and summed by
    /// [`Resources::from_proto`], attributes as text.
    pub fn from_offer(offer: &proto::Offer) -> Result<AgentOffer, InvalidOffer> {
        let offer_id = offer
            .id
            .as_ref()
            .map(|id| id.value.clone())
            .unwrap_or_default();
        let invalid = |reason: String| InvalidOffer {
            offer_id: offer_id.clone(),
            reason,
        };
        if offer_id.is_empty() {
            return Err(invalid("the offer has no id".into()));
        }
        let agent_id = match &offer.agent_id {
            Some(id) if !id.value.is_empty() => id.value.clone(),
            _ => return Err(invalid("the offer has no agent id".into())),
        };
        let resources =
            Resources::from_proto(&offer.resources).map_err(|e| invalid(e.to_string()))?;
        let mut by_role: BTreeMap<String, Pool> = BTreeMap::new();
        // `to_proto` yields one entry per (name, role), already validated and merged.
        for resource in resources.to_proto() {
            let pool = by_role
                .entry(resource.role.clone())
                .or_insert_with(|| Pool {
                    role: resource.role.clone(),
                    ..Pool::default()
                });
            match (resource.name.as_str(), &resource.value) {
                ("cpus", Some(proto::resource::Value::Scalar(v))) => pool.cpus = to_fixed(*v),
                ("mem", Some(proto::resource::Value::Scalar(v))) => pool.mem = to_fixed(*v),
                ("disk", Some(proto::resource::Value::Scalar(v))) => pool.disk = to_fixed(*v),
                ("gpus", Some(proto::resource::Value::Scalar(v))) => pool.gpus = to_fixed(*v),
                ("ports", Some(proto::resource::Value::Ranges(ranges))) => {
                    pool.ports =
                        RangeSet::from_intervals(ranges.range.iter().map(|r| (r.begin, r.end)));
                }
                // Other resources are not asked for by apps.
                _ => {}
            }
        }
        let mut pools: Vec<Pool> = by_role.into_values().collect();
        pools.sort_by_key(|pool| !pool.is_reserved());
        let mut attributes = BTreeMap::new();
        for attribute in &offer.attributes {
            attributes
                .entry(attribute.name.clone())
                .or_insert_with(|| attribute.text.clone());
        }
        Ok(AgentOffer {
            offer_id,
            agent_id,
            hostname: offer.hostname.clone(),
            attributes: Arc::new(attributes),
            allocation_role: offer.role.clone(),
            pools,
        })
    }
}

/// Where one live instance runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    pub agent_id: String,
    pub hostname: String,
    pub attributes: Arc<BTreeMap<String, String>>,
}

impl Location {
    /// The location of an instance launched from `offer`.
    pub fn of(offer: &AgentOffer) -> Location {
        Location {
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            attributes: Arc::clone(&offer.attributes),
        }
    }
}

/// Where each app's live instances run: what `UNIQUE`, `MAX_PER`, `GROUP_BY`,
/// `CLUSTER` and daemon apps count against.
#[derive(Clone, Debug, Default)]
pub struct Placed {
    by_app: HashMap<PathId, Vec<Location>>,
}

impl Placed {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, app: PathId, location: Location) {
        self.by_app.entry(app).or_default().push(location);
    }

    /// The app's instances' locations (empty when it has none).
    pub fn of(&self, app: &PathId) -> &[Location] {
        self.by_app.get(app).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(name: &str, role: &str, v: f64) -> proto::Resource {
        proto::Resource {
            name: name.into(),
            role: role.into(),
            reservation: None,
            value: Some(proto::resource::Value::Scalar(v)),
        }
    }

    #[test]
    fn reads_a_protocol_offer_with_roles_and_attributes() {
        let offer = proto::Offer {
            id: Some(proto::OfferId { value: "o1".into() }),
            agent_id: Some(proto::AgentId { value: "a1".into() }),
            hostname: "h1".into(),
            role: "prod".into(),
            resources: vec![
                scalar("cpus", "*", 2.0),
                scalar("cpus", "prod", 1.5),
                scalar("mem", "*", 1024.0),
                scalar("gpus", "*", 1.0),
                proto::Resource {
                    name: "ports".into(),
                    role: "*".into(),
                    reservation: None,
                    value: Some(proto::resource::Value::Ranges(proto::Ranges {
                        range: vec![proto::Range {
                            begin: 31000,
                            end: 31009,
                        }],
                    })),
                },
            ],
            attributes: vec![
                proto::Attribute {
                    name: "rack".into(),
                    text: "r1".into(),
                },
                proto::Attribute {
                    name: "rack".into(),
                    text: "r2".into(),
                },
            ],
            ..Default::default()
        };
        let a = AgentOffer::from_offer(&offer).unwrap();
        assert_eq!(a.agent_id, "a1");
        assert_eq!(a.allocation_role, "prod");
        assert_eq!(a.attributes.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(a.pools.len(), 2);
        assert_eq!(a.pools[0].role, "prod", "reserved pools come first");
        assert_eq!(a.pools[0].cpus, 1500);
        assert_eq!(a.pools[1].cpus, 2000);
        assert_eq!(a.pools[1].mem, 1_024_000);
        assert_eq!(a.pools[1].gpus, 1000);
        assert_eq!(a.pools[1].ports.count(), 10);
    }

    #[test]
    fn refuses_offers_without_ids_or_with_bad_resources() {
        let mut offer = proto::Offer::default();
        assert!(
            AgentOffer::from_offer(&offer)
                .unwrap_err()
                .reason
                .contains("no id")
        );
        offer.id = Some(proto::OfferId { value: "o".into() });
        assert!(
            AgentOffer::from_offer(&offer)
                .unwrap_err()
                .reason
                .contains("no agent id")
        );
        offer.agent_id = Some(proto::AgentId { value: "a".into() });
        offer.resources = vec![scalar("cpus", "*", -1.0)];
        assert!(AgentOffer::from_offer(&offer).is_err());
    }
}
