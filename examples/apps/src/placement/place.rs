//! [`place`]: which offer each instance launches from.
//!
//! One pass takes the demands in order and, for each instance, the best offer that
//! has the resources left, accepts the app's roles and satisfies its constraints
//! counting the instances already running *and* those placed earlier in the pass.
//! "Best" spreads an app: the offer whose `GROUP_BY` values hold the fewest of its
//! instances, then whose agent runs the fewest of them, then with the most free cpus.
//! Everything an instance takes is subtracted at once, so no offer is overcommitted.
//!
//! Per demand, what depends on the agent alone (roles, `LIKE`, `IS`, ...) is decided
//! once per offer, and constraint values are interned to small integers; each
//! instance then costs a few operations on a heap of offers ordered by that
//! preference: no strings, regexes or scans of all offers per instance.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;

use agora_sdk::RangeSet;
use agora_sdk::proto;

use crate::model::PathId;

use super::constraint::{Field, Operator};
use super::demand::Demand;
use super::offer::{AgentOffer, FIXED_POINT, Location, Placed, Pool};

/// Marathon's names for why an offer was not used (`/v2/queue`'s
/// `processedOffersSummary`), and Agora's for its launch limits.
pub mod reasons {
    pub const UNFULFILLED_ROLE: &str = "UnfulfilledRole";
    pub const UNFULFILLED_CONSTRAINT: &str = "UnfulfilledConstraint";
    pub const INSUFFICIENT_CPUS: &str = "InsufficientCpus";
    pub const INSUFFICIENT_MEMORY: &str = "InsufficientMemory";
    pub const INSUFFICIENT_DISK: &str = "InsufficientDisk";
    pub const INSUFFICIENT_GPUS: &str = "InsufficientGpus";
    pub const INSUFFICIENT_PORTS: &str = "InsufficientPorts";
    /// The offer already carries [`super::PlacementLimits::max_launches_per_offer`].
    pub const OFFER_LAUNCH_LIMIT: &str = "OfferLaunchLimit";
    /// The pass already made [`super::PlacementLimits::max_launches`].
    pub const PASS_LAUNCH_LIMIT: &str = "PassLaunchLimit";
}

/// Bounds on one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementLimits {
    /// Instances launched from one offer. The default, 1024, is the most task infos
    /// one launch operation may carry.
    pub max_launches_per_offer: usize,
    /// Instances launched in the whole pass; unbounded by default.
    pub max_launches: usize,
}

impl Default for PlacementLimits {
    fn default() -> Self {
        PlacementLimits {
            max_launches_per_offer: 1024,
            max_launches: usize::MAX,
        }
    }
}

/// One instance to launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Index into the demands given to [`place`].
    pub demand: usize,
    /// Index into the offers given to [`place`].
    pub offer: usize,
    /// Host ports in the order of [`Demand::host_ports`] (`$PORT0`, `$PORT1`, ...).
    pub ports: Vec<u64>,
    /// What the instance takes from each of the offer's pools (only pools it takes
    /// from, in the offer's pool order); together exactly the demand's resources.
    pub taken: Vec<Pool>,
}

impl Launch {
    /// `TaskInfo.resources` for this instance: what it takes, with each pool's role.
    pub fn resources(&self) -> Vec<proto::Resource> {
        let mut out = Vec::new();
        for pool in &self.taken {
            let scalar = |name: &str, amount: i64| proto::Resource {
                name: name.to_string(),
                role: pool.role.clone(),
                reservation: None,
                value: Some(proto::resource::Value::Scalar(amount as f64 / FIXED_POINT)),
            };
            for (name, amount) in [
                ("cpus", pool.cpus),
                ("mem", pool.mem),
                ("disk", pool.disk),
                ("gpus", pool.gpus),
            ] {
                if amount > 0 {
                    out.push(scalar(name, amount));
                }
            }
            if !pool.ports.is_empty() {
                out.push(proto::Resource {
                    name: "ports".to_string(),
                    role: pool.role.clone(),
                    reservation: None,
                    value: Some(proto::resource::Value::Ranges(proto::Ranges {
                        range: pool
                            .ports
                            .intervals()
                            .iter()
                            .map(|&(begin, end)| proto::Range { begin, end })
                            .collect(),
                    })),
                });
            }
        }
        out
    }
}

/// Why an app's instances were not all placed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rejections {
    /// Instances placed in this pass.
    pub placed: u32,
    /// Instances wanted: the demand's count, or for a daemon app the offered agents
    /// that satisfy its constraints and run none of its instances.
    pub wanted: u32,
    /// Offers looked at when explaining (for a daemon app, those of agents still
    /// wanting an instance).
    pub offers_seen: u64,
    /// Per reason (see [`reasons`]), how many of those offers it applies to; one
    /// offer may count under several.
    pub counts: BTreeMap<&'static str, u64>,
    /// What keeps the rest from being placed, for a person: which constraint no
    /// offered agent satisfies, which resource no offer has enough of.
    pub reason: String,
}

/// The result of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementOutcome {
    /// In placement order; resources of earlier launches from an offer are no longer
    /// free for later ones.
    pub launches: Vec<Launch>,
    /// Every app with a demand not fully placed.
    pub unplaced: BTreeMap<PathId, Rejections>,
}

/// Chooses an offer for each instance the demands ask for. Pure and deterministic:
/// the same input gives the same launches.
pub fn place(
    demands: &[Demand],
    offers: &[AgentOffer],
    placed: &Placed,
    limits: PlacementLimits,
) -> PlacementOutcome {
    let mut state = PassState::new(offers);
    let mut outcome = PlacementOutcome::default();
    for (index, demand) in demands.iter().enumerate() {
        state.intern_fields(demand, offers);
        let in_pass = state
            .launched_in_pass
            .get(&demand.app)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut view = DemandView::new(demand, offers, placed.of(&demand.app), in_pass, &state);
        let before = outcome.launches.len();
        if demand.daemon {
            place_daemon(index, demand, &mut view, &mut state, &limits, &mut outcome);
        } else {
            place_instances(index, demand, &mut view, &mut state, &limits, &mut outcome);
        }
        let launched = outcome.launches.len() - before;
        if launched > 0 {
            state
                .launched_in_pass
                .entry(demand.app.clone())
                .or_default()
                .extend(outcome.launches[before..].iter().map(|l| l.offer));
        }
        let wanted = if demand.daemon {
            launched + view.daemon_agents_waiting(&state)
        } else {
            demand.count as usize
        };
        if launched < wanted {
            let rejections = explain(demand, &view, &state, &limits, launched, wanted);
            merge(&mut outcome.unplaced, demand.app.clone(), rejections);
        }
    }
    outcome
}

fn place_instances(
    index: usize,
    demand: &Demand,
    view: &mut DemandView,
    state: &mut PassState,
    limits: &PlacementLimits,
    outcome: &mut PlacementOutcome,
) {
    // A min-heap of offers by score. Every part of a score only grows during the
    // demand (instances are added, resources taken), so a stale entry is never worse
    // than the truth: popping, re-scoring and pushing back when it grew yields the
    // exact best offer at a logarithmic cost instead of a scan of all offers.
    let mut heap: BinaryHeap<Reverse<(Score, usize)>> = (0..state.free.len())
        .filter_map(|o| view.score(o, state, demand).map(|s| Reverse((s, o))))
        .collect();
    // Offers refused by GROUP_BY until another instance lands elsewhere.
    let mut uneven: Vec<usize> = Vec::new();
    let mut launched = 0;
    while launched < demand.count && state.launches_total < limits.max_launches {
        let Some(Reverse((stored, o))) = heap.pop() else {
            return;
        };
        if state.launches_on[o] >= limits.max_launches_per_offer {
            continue;
        }
        // Refusals other than GROUP_BY's and missing resources are final: instances
        // are only added and resources only taken during a pass.
        let Some(score) = view.score(o, state, demand) else {
            continue;
        };
        match view.counted_refusal(o) {
            Some((_, Refusal::Uneven)) => {
                uneven.push(o);
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        if score != stored {
            heap.push(Reverse((score, o)));
            continue;
        }
        launch(index, o, demand, view, state, outcome);
        launched += 1;
        for o in std::iter::once(o).chain(uneven.drain(..)) {
            if let Some(score) = view.score(o, state, demand) {
                heap.push(Reverse((score, o)));
            }
        }
    }
}

fn place_daemon(
    index: usize,
    demand: &Demand,
    view: &mut DemandView,
    state: &mut PassState,
    limits: &PlacementLimits,
    outcome: &mut PlacementOutcome,
) {
    for o in 0..state.free.len() {
        if state.launches_total >= limits.max_launches {
            return;
        }
        let Ok(mask) = view.usable[o] else {
            continue;
        };
        if view.on_agent[state.agent_of[o]] > 0
            || state.launches_on[o] >= limits.max_launches_per_offer
            || Available::of(&state.free[o], mask, demand)
                .first_shortage(demand)
                .is_some()
            || view.counted_refusal(o).is_some()
        {
            continue;
        }
        launch(index, o, demand, view, state, outcome);
    }
}

fn launch(
    index: usize,
    o: usize,
    demand: &Demand,
    view: &mut DemandView,
    state: &mut PassState,
    outcome: &mut PlacementOutcome,
) {
    let Ok(mask) = view.usable[o] else {
        return;
    };
    let (ports, taken) = take(&mut state.free[o], mask, demand);
    state.launches_on[o] += 1;
    state.launches_total += 1;
    view.record(o, state.agent_of[o]);
    outcome.launches.push(Launch {
        demand: index,
        offer: o,
        ports,
        taken,
    });
}

/// Lower is better.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    /// Instances already on this offer's `GROUP_BY` values, summed.
    spread: u64,
    /// Instances of the app on this offer's agent.
    on_agent: u32,
    /// Ties go to the emptier offer, which spreads different apps too.
    free_cpus: Reverse<i64>,
}

/// A pool with its free port count cached (counting ranges is a loop).
#[derive(Clone, Debug)]
struct FreePool {
    pool: Pool,
    /// Invariant: `pool.ports.count()`.
    port_count: u64,
}

/// What changes over a pass.
struct PassState {
    /// Per offer, per pool: what is still free.
    free: Vec<Vec<FreePool>>,
    /// Per offer: launches from it so far.
    launches_on: Vec<usize>,
    launches_total: usize,
    /// Per offer: the index of its agent (offers of one agent share it).
    agent_of: Vec<usize>,
    /// Agent id → index, for the agents of the offers.
    agent_index: HashMap<String, usize>,
    /// Per app: the offers its instances were launched from in this pass.
    launched_in_pass: HashMap<PathId, Vec<usize>>,
    /// Per field some constraint counts by: the offers' values, interned once per
    /// pass rather than once per demand.
    field_values: HashMap<Field, FieldValues>,
}

/// One field's values over the offers, as small integers.
struct FieldValues {
    /// Value → id; ids are `0..ids.len()`.
    ids: HashMap<String, usize>,
    /// Per offer: its agent's value's id; `None` when it lacks the attribute.
    per_offer: Vec<Option<usize>>,
}

impl FieldValues {
    fn of(field: &Field, offers: &[AgentOffer]) -> FieldValues {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let per_offer = offers
            .iter()
            .map(|offer| {
                let value = field.value_of(&offer.hostname, &offer.attributes)?;
                let next = ids.len();
                Some(match ids.get(value) {
                    Some(&id) => id,
                    None => *ids.entry(value.to_string()).or_insert(next),
                })
            })
            .collect();
        FieldValues { ids, per_offer }
    }
}

impl PassState {
    fn new(offers: &[AgentOffer]) -> PassState {
        let mut agent_index = HashMap::new();
        let agent_of = offers
            .iter()
            .map(|offer| {
                let next = agent_index.len();
                *agent_index.entry(offer.agent_id.clone()).or_insert(next)
            })
            .collect();
        PassState {
            free: offers
                .iter()
                .map(|offer| {
                    offer
                        .pools
                        .iter()
                        .map(|pool| FreePool {
                            port_count: pool.ports.count(),
                            pool: pool.clone(),
                        })
                        .collect()
                })
                .collect(),
            launches_on: vec![0; offers.len()],
            launches_total: 0,
            agent_of,
            agent_index,
            launched_in_pass: HashMap::new(),
            field_values: HashMap::new(),
        }
    }

    /// Interns the values of the fields `demand` counts by, if not done yet.
    fn intern_fields(&mut self, demand: &Demand, offers: &[AgentOffer]) {
        for constraint in demand
            .constraints
            .iter()
            .filter(|c| c.depends_on_instances())
        {
            if !self.field_values.contains_key(constraint.target()) {
                self.field_values.insert(
                    constraint.target().clone(),
                    FieldValues::of(constraint.target(), offers),
                );
            }
        }
    }
}

/// Why an offer cannot take an instance, first reason first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Cause {
    /// The offer is allocated to another role than the app's.
    AllocationRole,
    /// None of the offer's pools is of an accepted role.
    AcceptedRoles,
    Constraint(usize, Refusal),
    Resource(Shortage),
    OfferLimit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Refusal {
    /// The agent lacks the attribute.
    Missing,
    /// `LIKE`, `UNLIKE`, `IS` or `CLUSTER` with a value: the agent's value is wrong.
    Mismatch,
    /// `UNIQUE`: an instance already has this value.
    Taken,
    /// `MAX_PER`: this value has its share.
    Full,
    /// `CLUSTER` without a value: instances run on another value.
    Pinned,
    /// `GROUP_BY`: this value has more instances than the least used one.
    Uneven,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Shortage {
    Cpus,
    Mem,
    Disk,
    Gpus,
    Ports,
}

impl Shortage {
    const ALL: [Shortage; 5] = [
        Shortage::Cpus,
        Shortage::Mem,
        Shortage::Disk,
        Shortage::Gpus,
        Shortage::Ports,
    ];

    fn reason(self) -> &'static str {
        match self {
            Shortage::Cpus => reasons::INSUFFICIENT_CPUS,
            Shortage::Mem => reasons::INSUFFICIENT_MEMORY,
            Shortage::Disk => reasons::INSUFFICIENT_DISK,
            Shortage::Gpus => reasons::INSUFFICIENT_GPUS,
            Shortage::Ports => reasons::INSUFFICIENT_PORTS,
        }
    }
}

/// What an offer's accepted pools hold, summed.
#[derive(Clone, Copy, Debug, Default)]
struct Available {
    cpus: i64,
    mem: i64,
    disk: i64,
    gpus: i64,
    /// Free ports not among the demand's fixed ones.
    any_ports: u64,
    /// Every fixed port is free in an accepted pool.
    fixed_ports_free: bool,
}

fn in_mask(mask: u64, pool: usize) -> bool {
    pool < 64 && mask & (1 << pool) != 0
}

impl Available {
    fn of(pools: &[FreePool], mask: u64, demand: &Demand) -> Available {
        let mut out = Available::default();
        let mut ports = 0u64;
        for (i, free) in pools.iter().enumerate() {
            if !in_mask(mask, i) {
                continue;
            }
            out.cpus += free.pool.cpus;
            out.mem += free.pool.mem;
            out.disk += free.pool.disk;
            out.gpus += free.pool.gpus;
            ports += free.port_count;
        }
        let mut fixed = 0u64;
        out.fixed_ports_free = true;
        for port in demand.host_ports.iter().flatten() {
            fixed += 1;
            let free = pools
                .iter()
                .enumerate()
                .any(|(i, p)| in_mask(mask, i) && p.pool.ports.contains_range(*port, *port));
            out.fixed_ports_free &= free;
        }
        out.any_ports = ports.saturating_sub(fixed);
        out
    }

    fn short_of(&self, demand: &Demand, what: Shortage) -> bool {
        match what {
            Shortage::Cpus => self.cpus < demand.cpus,
            Shortage::Mem => self.mem < demand.mem,
            Shortage::Disk => self.disk < demand.disk,
            Shortage::Gpus => self.gpus < demand.gpus,
            Shortage::Ports => !self.fixed_ports_free || self.any_ports < demand.any_port_count(),
        }
    }

    fn first_shortage(&self, demand: &Demand) -> Option<Shortage> {
        Shortage::ALL
            .into_iter()
            .find(|&what| self.short_of(demand, what))
    }
}

/// Takes the demand's resources from the accepted pools, reserved ones first.
/// The caller has checked that they fit.
fn take(pools: &mut [FreePool], mask: u64, demand: &Demand) -> (Vec<u64>, Vec<Pool>) {
    let mut taken: Vec<Option<Pool>> = vec![None; pools.len()];
    fn part(taken: &mut [Option<Pool>], i: usize, role: &str) -> usize {
        if taken[i].is_none() {
            taken[i] = Some(Pool {
                role: role.to_string(),
                ..Pool::default()
            });
        }
        i
    }
    type Amount = fn(&mut Pool) -> &mut i64;
    let scalars: [(i64, Amount); 4] = [
        (demand.cpus, |p| &mut p.cpus),
        (demand.mem, |p| &mut p.mem),
        (demand.disk, |p| &mut p.disk),
        (demand.gpus, |p| &mut p.gpus),
    ];
    for (mut wanted, amount) in scalars {
        for (i, free) in pools.iter_mut().enumerate() {
            if wanted <= 0 {
                break;
            }
            if !in_mask(mask, i) {
                continue;
            }
            let have = amount(&mut free.pool);
            let share = wanted.min(*have);
            if share <= 0 {
                continue;
            }
            *have -= share;
            wanted -= share;
            let i = part(&mut taken, i, &free.pool.role);
            if let Some(pool) = taken[i].as_mut() {
                *amount(pool) += share;
            }
        }
    }
    let mut ports: Vec<Option<u64>> = demand.host_ports.clone();
    for port in demand.host_ports.iter().flatten() {
        let one = RangeSet::from_intervals([(*port, *port)]);
        if let Some((i, free)) = pools
            .iter_mut()
            .enumerate()
            .find(|(i, p)| in_mask(mask, *i) && p.pool.ports.contains_range(*port, *port))
        {
            free.pool.ports.remove(&one);
            free.port_count -= 1;
            let i = part(&mut taken, i, &free.pool.role);
            if let Some(pool) = taken[i].as_mut() {
                pool.ports.insert(*port, *port);
            }
        }
    }
    let mut wanted = demand.any_port_count();
    let mut any = Vec::with_capacity(wanted as usize);
    for (i, free) in pools.iter_mut().enumerate() {
        if wanted == 0 {
            break;
        }
        if !in_mask(mask, i) || free.port_count == 0 {
            continue;
        }
        let chosen = free.pool.ports.take_first(wanted);
        let count = chosen.count();
        free.pool.ports.remove(&chosen);
        free.port_count -= count;
        wanted -= count;
        any.extend(chosen.values());
        let i = part(&mut taken, i, &free.pool.role);
        if let Some(pool) = taken[i].as_mut() {
            pool.ports.union(&chosen);
        }
    }
    let mut any = any.into_iter();
    for slot in ports.iter_mut().filter(|p| p.is_none()) {
        *slot = any.next();
    }
    (
        ports.into_iter().flatten().collect(),
        taken.into_iter().flatten().collect(),
    )
}

/// A constraint whose answer depends on the app's instances, with its values
/// interned: counts are kept per value id.
struct Counted {
    /// Index into the demand's constraints.
    constraint: usize,
    operator: Operator,
    /// `MAX_PER`'s limit or `GROUP_BY`'s minimum number of values.
    number: u32,
    /// Per offer: the id of its agent's value; `None` when it lacks the attribute.
    offer_value: Vec<Option<usize>>,
    /// Per value id: the app's instances there.
    counts: Vec<u32>,
    /// Instances on agents lacking the attribute (a group of their own for
    /// `GROUP_BY`, and never where `CLUSTER` wants).
    missing: u32,
    /// All the app's instances.
    total: u32,
    /// `GROUP_BY`: distinct values (the missing one included) holding instances.
    groups: u32,
    /// `GROUP_BY`: the fewest instances any of those groups holds (0 when none).
    min_count: u32,
    /// `GROUP_BY`: per instance count `k`, how many groups hold exactly `k`; lets
    /// `min_count` follow increments without rescanning.
    histogram: Vec<u32>,
}

impl Counted {
    fn refusal(&self, o: usize) -> Option<Refusal> {
        // A missing attribute was refused as static already.
        let value = self.offer_value[o]?;
        let here = self.counts[value];
        let ok = match self.operator {
            Operator::Unique => here == 0,
            Operator::MaxPer => here < self.number,
            Operator::Cluster => here == self.total,
            // Marathon's rule: a new value is always welcome; a used one only when it
            // holds the fewest instances and enough values are in use.
            Operator::GroupBy => {
                here == 0 || (self.groups >= self.number && here == self.min_count)
            }
            Operator::Like | Operator::Unlike | Operator::Is => true,
        };
        (!ok).then_some(match self.operator {
            Operator::Unique => Refusal::Taken,
            Operator::MaxPer => Refusal::Full,
            Operator::Cluster => Refusal::Pinned,
            _ => Refusal::Uneven,
        })
    }

    fn add(&mut self, value: Option<usize>) {
        self.total += 1;
        let count = match value {
            Some(v) => &mut self.counts[v],
            None => &mut self.missing,
        };
        let before = *count;
        *count += 1;
        let after = *count;
        if self.operator != Operator::GroupBy {
            return;
        }
        if self.histogram.len() <= after as usize {
            self.histogram.resize(after as usize + 1, 0);
        }
        self.histogram[after as usize] += 1;
        if before == 0 {
            self.groups += 1;
            self.min_count = 1;
        } else {
            self.histogram[before as usize] -= 1;
            if before == self.min_count && self.histogram[before as usize] == 0 {
                self.min_count = after;
            }
        }
    }
}

/// One demand's view of the offers: what is decided by the agent alone, computed
/// once, and the counts that change as instances are placed.
struct DemandView {
    /// Per offer: the mask of its pools the demand may use, or why the agent alone
    /// rules it out.
    usable: Vec<Result<u64, Cause>>,
    counted: Vec<Counted>,
    /// Per agent (of the offers): the app's instances on it.
    on_agent: Vec<u32>,
}

impl DemandView {
    fn new<'a>(
        demand: &Demand,
        offers: &'a [AgentOffer],
        existing: &'a [Location],
        in_pass: &[usize],
        state: &PassState,
    ) -> DemandView {
        let usable = offers
            .iter()
            .map(|offer| usable_pools(demand, offer))
            .collect();
        let mut counted = Vec::new();
        for (constraint_index, constraint) in demand.constraints.iter().enumerate() {
            if !constraint.depends_on_instances() {
                continue;
            }
            let Some(values) = state.field_values.get(constraint.target()) else {
                continue;
            };
            // Values of running instances on agents not offered get ids past the
            // offered ones: they still count as groups for GROUP_BY.
            let mut unoffered: HashMap<&'a str, usize> = HashMap::new();
            let existing_values: Vec<Option<usize>> = existing
                .iter()
                .map(|l| {
                    let value = constraint.target().value_of(&l.hostname, &l.attributes)?;
                    Some(values.ids.get(value).copied().unwrap_or_else(|| {
                        let next = values.ids.len() + unoffered.len();
                        *unoffered.entry(value).or_insert(next)
                    }))
                })
                .collect();
            let mut c = Counted {
                constraint: constraint_index,
                operator: constraint.operator,
                number: constraint.number(),
                counts: vec![0; values.ids.len() + unoffered.len()],
                offer_value: values.per_offer.clone(),
                missing: 0,
                total: 0,
                groups: 0,
                min_count: 0,
                histogram: Vec::new(),
            };
            for value in existing_values {
                c.add(value);
            }
            for &o in in_pass {
                c.add(c.offer_value[o]);
            }
            counted.push(c);
        }
        let mut on_agent = vec![0u32; state.agent_index.len()];
        for location in existing {
            if let Some(&a) = state.agent_index.get(&location.agent_id) {
                on_agent[a] += 1;
            }
        }
        for &o in in_pass {
            on_agent[state.agent_of[o]] += 1;
        }
        DemandView {
            usable,
            counted,
            on_agent,
        }
    }

    /// How good offer `o` is for the next instance; `None` when it cannot take one
    /// for lack of resources or accepted roles.
    fn score(&self, o: usize, state: &PassState, demand: &Demand) -> Option<Score> {
        let mask = *self.usable[o].as_ref().ok()?;
        let available = Available::of(&state.free[o], mask, demand);
        if available.first_shortage(demand).is_some() {
            return None;
        }
        Some(Score {
            spread: self.group_by_load(o),
            on_agent: self.on_agent[state.agent_of[o]],
            free_cpus: Reverse(available.cpus),
        })
    }

    fn counted_refusal(&self, o: usize) -> Option<(usize, Refusal)> {
        self.counted
            .iter()
            .find_map(|c| c.refusal(o).map(|r| (c.constraint, r)))
    }

    fn group_by_load(&self, o: usize) -> u64 {
        self.counted
            .iter()
            .filter(|c| c.operator == Operator::GroupBy)
            .map(|c| c.offer_value[o].map_or(0, |v| u64::from(c.counts[v])))
            .sum()
    }

    fn record(&mut self, o: usize, agent: usize) {
        for c in &mut self.counted {
            let value = c.offer_value[o];
            c.add(value);
        }
        self.on_agent[agent] += 1;
    }

    /// Daemon apps: offered agents that satisfy the constraints on their own and
    /// still run no instance.
    fn daemon_agents_waiting(&self, state: &PassState) -> usize {
        let mut waiting = vec![false; self.on_agent.len()];
        for (o, usable) in self.usable.iter().enumerate() {
            let a = state.agent_of[o];
            if self.on_agent[a] == 0 && wants_daemon(usable) {
                waiting[a] = true;
            }
        }
        waiting.into_iter().filter(|w| *w).count()
    }
}

/// A daemon instance belongs on the agent unless a constraint rules the agent out.
fn wants_daemon(usable: &Result<u64, Cause>) -> bool {
    !matches!(usable, Err(Cause::Constraint(..)))
}

fn usable_pools(demand: &Demand, offer: &AgentOffer) -> Result<u64, Cause> {
    if demand.role.is_none() && demand.accepted_roles.is_none() && demand.constraints.is_empty() {
        // An offer without resources is short of them, not of roles.
        return match offer.pools.len() {
            n if n >= 64 => Ok(u64::MAX),
            n => Ok((1 << n) - 1),
        };
    }
    if let Some(role) = &demand.role
        && !offer.allocation_role.is_empty()
        && offer.allocation_role != *role
    {
        return Err(Cause::AllocationRole);
    }
    for (i, constraint) in demand.constraints.iter().enumerate() {
        let value = constraint
            .target()
            .value_of(&offer.hostname, &offer.attributes);
        if !constraint.matches_agent(value) {
            let refusal = if value.is_none() {
                Refusal::Missing
            } else {
                Refusal::Mismatch
            };
            return Err(Cause::Constraint(i, refusal));
        }
    }
    let mask = offer
        .pools
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, pool)| demand.accepts_role(&pool.role))
        .fold(0u64, |mask, (i, _)| mask | (1 << i));
    if mask == 0 && !offer.pools.is_empty() {
        return Err(Cause::AcceptedRoles);
    }
    Ok(mask)
}

/// Looks at every relevant offer once more, after placement, and says why it cannot
/// take another instance.
fn explain(
    demand: &Demand,
    view: &DemandView,
    state: &PassState,
    limits: &PlacementLimits,
    launched: usize,
    wanted: usize,
) -> Rejections {
    let mut rejections = Rejections {
        placed: launched as u32,
        wanted: wanted as u32,
        ..Rejections::default()
    };
    let prefix = format!("{launched} of {wanted} instances placed; ");
    if state.launches_total >= limits.max_launches {
        rejections.offers_seen = state.free.len() as u64;
        rejections.counts.insert(reasons::PASS_LAUNCH_LIMIT, 1);
        rejections.reason = format!(
            "{prefix}this pass reached its limit of {} launches; the rest wait for the next offers",
            limits.max_launches
        );
        return rejections;
    }
    // First cause per offer, for the sentence; refusal kinds per constraint, for
    // its detail; the most any offer has of each resource, to say how far off it is.
    let mut first_causes: BTreeMap<CauseKey, u64> = BTreeMap::new();
    let mut refusals: BTreeMap<(usize, Refusal), u64> = BTreeMap::new();
    let mut most = Available::default();
    for o in 0..state.free.len() {
        let usable = &view.usable[o];
        if demand.daemon && (view.on_agent[state.agent_of[o]] > 0 || !wants_daemon(usable)) {
            continue;
        }
        rejections.offers_seen += 1;
        let mut causes: Vec<Cause> = Vec::new();
        match *usable {
            Err(cause) => causes.push(cause),
            Ok(mask) => {
                if let Some((c, refusal)) = view.counted_refusal(o) {
                    causes.push(Cause::Constraint(c, refusal));
                }
                let available = Available::of(&state.free[o], mask, demand);
                most.cpus = most.cpus.max(available.cpus);
                most.mem = most.mem.max(available.mem);
                most.disk = most.disk.max(available.disk);
                most.gpus = most.gpus.max(available.gpus);
                most.any_ports = most.any_ports.max(available.any_ports);
                most.fixed_ports_free |= available.fixed_ports_free;
                for what in Shortage::ALL {
                    if available.short_of(demand, what) {
                        causes.push(Cause::Resource(what));
                    }
                }
                if state.launches_on[o] >= limits.max_launches_per_offer {
                    causes.push(Cause::OfferLimit);
                }
            }
        }
        for cause in &causes {
            let reason = match cause {
                Cause::AllocationRole | Cause::AcceptedRoles => reasons::UNFULFILLED_ROLE,
                Cause::Constraint(..) => reasons::UNFULFILLED_CONSTRAINT,
                Cause::Resource(what) => what.reason(),
                Cause::OfferLimit => reasons::OFFER_LAUNCH_LIMIT,
            };
            *rejections.counts.entry(reason).or_default() += 1;
            if let Cause::Constraint(c, refusal) = cause {
                *refusals.entry((*c, *refusal)).or_default() += 1;
            }
        }
        if let Some(first) = causes.first() {
            *first_causes.entry(CauseKey::from(*first)).or_default() += 1;
        }
    }
    rejections.reason = if rejections.offers_seen == 0 {
        format!("{prefix}no offers were available")
    } else if first_causes.is_empty() {
        // Every offer could take one more; only the order of this pass left it out.
        format!("{prefix}the offers were used up by other instances in this pass")
    } else {
        let explainer = Explainer {
            demand,
            refusals: &refusals,
            most: &most,
        };
        let mut ranked: Vec<(CauseKey, u64)> = first_causes.into_iter().collect();
        ranked.sort_by_key(|(key, count)| (Reverse(*count), *key));
        if let [(key, _)] = ranked.as_slice() {
            format!("{prefix}{}", explainer.everywhere(*key))
        } else {
            let mut text = format!("{prefix}of {} offers, ", rejections.offers_seen);
            for (i, (key, count)) in ranked.iter().enumerate() {
                if i > 0 {
                    text.push_str(if i + 1 == ranked.len() { " and " } else { ", " });
                }
                let _ = write!(text, "{count} {}", explainer.per_offer(*key));
            }
            text
        }
    };
    rejections
}

/// A cause without the refusal kind: how the sentence groups offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum CauseKey {
    AllocationRole,
    AcceptedRoles,
    Constraint(usize),
    Resource(Shortage),
    OfferLimit,
}

impl From<Cause> for CauseKey {
    fn from(cause: Cause) -> CauseKey {
        match cause {
            Cause::AllocationRole => CauseKey::AllocationRole,
            Cause::AcceptedRoles => CauseKey::AcceptedRoles,
            Cause::Constraint(c, _) => CauseKey::Constraint(c),
            Cause::Resource(what) => CauseKey::Resource(what),
            Cause::OfferLimit => CauseKey::OfferLimit,
        }
    }
}

struct Explainer<'a> {
    demand: &'a Demand,
    refusals: &'a BTreeMap<(usize, Refusal), u64>,
    most: &'a Available,
}

impl Explainer<'_> {
    /// When every offer fails for `key`.
    fn everywhere(&self, key: CauseKey) -> String {
        match key {
            CauseKey::AllocationRole => format!(
                "no offer is allocated to the app's role {:?}",
                self.demand.role.as_deref().unwrap_or_default()
            ),
            CauseKey::AcceptedRoles => format!(
                "no offer has resources of the accepted roles {}",
                self.accepted_roles()
            ),
            CauseKey::Constraint(c) => format!(
                "no offered agent satisfies {} ({})",
                self.constraint(c),
                self.constraint_detail(c)
            ),
            CauseKey::Resource(what) => format!("no offer has {}", self.resource(what)),
            CauseKey::OfferLimit => "every offer already carries its most launches".to_string(),
        }
    }

    /// When `count` offers fail for `key`: "{count} {this}".
    fn per_offer(&self, key: CauseKey) -> String {
        match key {
            CauseKey::AllocationRole => format!(
                "are allocated to another role than {:?}",
                self.demand.role.as_deref().unwrap_or_default()
            ),
            CauseKey::AcceptedRoles => format!(
                "have no resources of the accepted roles {}",
                self.accepted_roles()
            ),
            CauseKey::Constraint(c) => format!(
                "fail {} ({})",
                self.constraint(c),
                self.constraint_detail(c)
            ),
            CauseKey::Resource(what) => format!("lack {}", self.resource(what)),
            CauseKey::OfferLimit => "already carry their most launches".to_string(),
        }
    }

    fn accepted_roles(&self) -> String {
        serde_json::to_string(self.demand.accepted_roles.as_deref().unwrap_or_default())
            .unwrap_or_default()
    }

    fn constraint(&self, c: usize) -> String {
        self.demand
            .constraints
            .get(c)
            .map(|c| c.describe())
            .unwrap_or_default()
    }

    /// The most frequent refusal of constraint `c`, with how many offers it hit.
    fn constraint_detail(&self, c: usize) -> String {
        let Some(constraint) = self.demand.constraints.get(c) else {
            return String::new();
        };
        let Some((&(_, refusal), &n)) = self
            .refusals
            .range((c, Refusal::Missing)..=(c, Refusal::Uneven))
            .max_by_key(|(_, n)| **n)
        else {
            return String::new();
        };
        let agents = plural(n, "agent", "agents");
        // Verbs agree with the count: "1 agent has", "3 agents have".
        let verb = |one: &'static str, many: &'static str| if n == 1 { one } else { many };
        let (has, lacks, runs, is) = (
            verb("has", "have"),
            verb("lacks", "lack"),
            verb("runs", "run"),
            verb("is", "are"),
        );
        let field = &constraint.field;
        let on_hostname = *constraint.target() == Field::Hostname;
        let limit = constraint.number();
        match refusal {
            Refusal::Missing => format!("{agents} {lacks} the attribute {field:?}"),
            Refusal::Mismatch => format!("{agents} {has} another {field}"),
            Refusal::Taken if on_hostname => format!("{agents} already {runs} one"),
            Refusal::Taken => format!("{agents} {has} a {field} that already runs one"),
            Refusal::Full if on_hostname => format!("{agents} already {runs} {limit}"),
            Refusal::Full => format!("{agents} {has} a {field} that already runs {limit}"),
            Refusal::Pinned => {
                format!("{agents} {is} not on the {field} the app's instances run on")
            }
            Refusal::Uneven => {
                format!("{agents} {has} a {field} that runs more instances than another")
            }
        }
    }

    fn resource(&self, what: Shortage) -> String {
        let units = |v: i64| format_units(v);
        let d = self.demand;
        let m = self.most;
        match what {
            Shortage::Cpus => format!(
                "enough cpus ({} needed, at most {} free)",
                units(d.cpus),
                units(m.cpus)
            ),
            Shortage::Mem => format!(
                "enough memory ({} MB needed, at most {} MB free)",
                units(d.mem),
                units(m.mem)
            ),
            Shortage::Disk => format!(
                "enough disk ({} MB needed, at most {} MB free)",
                units(d.disk),
                units(m.disk)
            ),
            Shortage::Gpus => format!(
                "enough gpus ({} needed, at most {} free)",
                units(d.gpus),
                units(m.gpus)
            ),
            Shortage::Ports if !m.fixed_ports_free => {
                let fixed: Vec<String> =
                    d.host_ports.iter().flatten().map(u64::to_string).collect();
                format!("the host ports {} free", fixed.join(", "))
            }
            Shortage::Ports => format!(
                "enough free ports ({} needed, at most {} free)",
                d.any_port_count(),
                m.any_ports
            ),
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Thousandths as a short decimal: 500 → "0.5", 2000 → "2".
fn format_units(thousandths: i64) -> String {
    let units = thousandths as f64 / FIXED_POINT;
    let text = format!("{units:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn merge(unplaced: &mut BTreeMap<PathId, Rejections>, app: PathId, new: Rejections) {
    match unplaced.get_mut(&app) {
        None => {
            unplaced.insert(app, new);
        }
        Some(old) => {
            old.placed += new.placed;
            old.wanted += new.wanted;
            old.offers_seen = old.offers_seen.max(new.offers_seen);
            for (reason, n) in new.counts {
                *old.counts.entry(reason).or_default() += n;
            }
            old.reason = new.reason;
        }
    }
}
