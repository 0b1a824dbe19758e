//! The allocator: weighted hierarchical dominant resource fairness (DRF) with quotas,
//! reservations, offer filters and suppression. Pure and deterministic: it reads a
//! picture of the cluster ([`AllocationInput`]) and says who gets what ([`Grant`]);
//! the core turns grants into offers. No I/O, no clock, no randomness.
//!
//! # The model
//! - **Roles** are paths (`eng/ml`); `eng` is the parent of `eng/ml`. A role's
//!   allocation counts its descendants' allocations. A role's **weighted share** is its
//!   dominant share (its largest fraction of any scalar of the cluster total) divided
//!   by its weight (default 1).
//! - **Frameworks** subscribe to one or more roles; each (framework, role) pair is
//!   sorted, offered, suppressed and filtered on its own, as in Mesos.
//! - **Order**: at each level of the role tree the child with the lowest weighted share
//!   goes first (ties by name); a role's own frameworks compete with its sub-roles as
//!   one more child (Mesos' virtual leaf), weighted like the role. Within a role the
//!   framework with the lowest dominant share of that role's allocation goes first
//!   (ties by framework id). Shares are updated after every grant, so a pass is
//!   progressive filling.
//! - **Offers**: agents are visited in input order; an agent's allocatable resources
//!   for the chosen (framework, role) go to that one framework in one grant (one offer
//!   per agent per framework-role, as in Mesos). What a grant leaves (reservations of
//!   other roles, or what quotas held back) goes on to the next candidate.
//! - **Reservations**: resources reserved for role R are offered only to R and its
//!   descendants, and count toward their allocation once granted.
//! - **Minimum allocatable** (Mesos' `--min_allocatable_resources` default): a grant
//!   is made only if it holds at least 0.01 cpus or 32 MB of memory.
//! - **Suppressed** (framework, role) pairs and inactive frameworks get nothing, but
//!   what they hold still counts toward their roles' shares. A **filter** (DECLINE)
//!   holds a grant back when the grant is contained in what was refused (Mesos' subset
//!   rule): resources freed since then are offered at once. Expired filters are the
//!   caller's business: [`FilterLookup`] answers only live ones.
//! - **Draining** agents are skipped entirely.
//!
//! # Quotas
//! A role's quota has a **guarantee** and a **limit** per scalar name; both cover the
//! role with its descendants. A role's *consumption* is what it holds plus the
//! unallocated reservations for it (on agents in the pass): reservations are
//! guaranteed to it anyway. *Unmet(R) = guarantee(R) − consumption(R)* (not below 0).
//!
//! The cluster must keep enough free unreserved resources to meet every unmet
//! guarantee: *required = Σ need(top-level roles)*, where *need(R) = max(unmet(R),
//! Σ need(children))* so that a child's guarantee counts inside its parent's, not on
//! top of it. *free* is the unreserved, unallocated total of the agents in the pass;
//! *surplus = free − required*. Giving unreserved resources to role X lowers
//! `required` by up to *headroom(X)* (what X's grant can count toward guarantees on
//! its path, worked out from the `need`s along the path); anything beyond that
//! headroom must come out of the surplus. That is Mesos' headroom rule, simplified:
//! it holds resources back for a role whose guarantee is unmet even when that role has
//! no framework to take them right now (as Mesos does), and it counts free resources
//! cluster-wide without asking whether the roles that need them could use them on
//! that agent (filters, reservations).
//!
//! A pass has two stages, each a sweep over the agents:
//! 1. **Guarantees**: only roles under an unmet guarantee, in DRF order. Per scalar
//!    name, a role gets at most its headroom for names guaranteed on its path, and at
//!    most the surplus for other names; a grant must include something toward a
//!    guarantee. Skipped when every guarantee is met.
//! 2. **Fair share**: every role, in DRF order, at most headroom + surplus per name.
//!
//! In both, no role (with its descendants) ever holds more than its **limit**; a grant
//! is shrunk to fit (scalars only; ranges and sets such as ports go whole with any
//! grant that holds a scalar).
//!
//! # Speed
//! Each level of the role tree keeps its children, and each role its frameworks, in a
//! `BTreeSet` ordered by (share, tie-break), so picking the next candidate is
//! O(depth · log n) rather than a scan of every framework, and a grant re-sorts only
//! the granted framework and its roles. The pass works on a compact copy of the input
//! (scalar amounts in fixed point, indexed by name) and builds one `Resources` per
//! grant. See `benches/allocator.rs` for figures.

mod pass;
#[cfg(test)]
mod props;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use agora_core::Resources;

/// Mesos' `--min_allocatable_resources`: a grant must hold at least this much cpus
/// **or** this much memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinAllocatable {
    /// In cpus; Mesos' default 0.01.
    pub cpus: f64,
    /// In MB; Mesos' default 32.
    pub mem: f64,
}

impl Default for MinAllocatable {
    fn default() -> Self {
        Self {
            cpus: 0.01,
            mem: 32.0,
        }
    }
}

impl MinAllocatable {
    /// Whether `r` is worth offering.
    pub fn admits(&self, r: &Resources) -> bool {
        r.cpus() >= self.cpus || r.mem() >= self.mem
    }
}

/// Whether a leftover is worth offering under Mesos' default minimum.
pub fn is_allocatable(r: &Resources) -> bool {
    MinAllocatable::default().admits(r)
}

/// The (unweighted) dominant share of `allocated` in a cluster of `total`.
pub fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    total
        .scalar_names()
        .into_iter()
        .map(|name| {
            let t = total.scalar(name);
            if t > 0.0 {
                allocated.scalar(name) / t
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

/// An agent as the allocator sees it.
#[derive(Clone, Debug)]
pub struct AgentInput<'a> {
    pub id: &'a str,
    /// Resources neither used by tasks nor outstanding in offers, keyed by
    /// (name, role): role `*` is unreserved, any other is reserved for that role.
    pub available: &'a Resources,
    /// Draining (maintenance): offered nothing, and its resources do not count as free
    /// for quota headroom.
    pub draining: bool,
}

/// One role a framework is subscribed to.
#[derive(Clone, Debug)]
pub struct FrameworkRole<'a> {
    /// The role; `""` is read as `*`.
    pub role: &'a str,
    /// SUPPRESS for this role: no offers in it until REVIVE.
    pub suppressed: bool,
    /// What the framework holds in this role now: its tasks' resources plus its
    /// outstanding offers. Only scalars named in the cluster total count.
    pub allocated: &'a Resources,
}

/// A framework as the allocator sees it.
#[derive(Clone, Debug)]
pub struct FrameworkInput<'a> {
    pub id: &'a str,
    /// Connected; an inactive framework gets no offers but its allocation still
    /// counts toward its roles' shares.
    pub active: bool,
    /// Whether it may have live filters. `false` promises it has none: the
    /// [`FilterLookup`] is then not consulted for it (a fast path for the common case).
    pub has_filters: bool,
    /// Its roles. A role listed twice is read once (the first entry).
    pub roles: Vec<FrameworkRole<'a>>,
}

/// A role's weight and quota. Roles not listed have weight 1 and no quota.
#[derive(Clone, Debug)]
pub struct RoleInput<'a> {
    pub name: &'a str,
    /// Divides the role's share; not finite or not above 0 is read as 1.
    pub weight: f64,
    /// Scalars the role (with its descendants) is guaranteed; entries' roles are
    /// ignored (amounts of one name add up).
    pub guarantee: Option<&'a Resources>,
    /// (scalar name, the most of it the role with its descendants may hold). A name
    /// not listed is unlimited; a negative limit is read as 0, NaN as no limit.
    pub limit: Vec<(&'a str, f64)>,
}

/// Everything one allocation pass reads.
#[derive(Clone, Debug)]
pub struct AllocationInput<'a> {
    /// The sum of every agent's total: the denominators of shares.
    pub cluster_total: &'a Resources,
    /// Visited in this order (sort them, e.g. by id, for a deterministic pass).
    pub agents: &'a [AgentInput<'a>],
    /// In any order: the allocator orders them by id. A (framework id, role) pair that
    /// appears more than once is read once (the first).
    pub frameworks: &'a [FrameworkInput<'a>],
    /// Weights and quotas; a role listed twice takes the first entry.
    pub roles: &'a [RoleInput<'a>],
    pub min_allocatable: MinAllocatable,
}

/// Live decline filters.
pub trait FilterLookup {
    /// What `framework` declined for `role` on `agent` and is still held back, if a
    /// filter is live. A grant contained in it is not made.
    fn refused(&self, framework: &str, role: &str, agent: &str) -> Option<&Resources>;
}

/// No filters at all.
pub struct NoFilters;

impl FilterLookup for NoFilters {
    fn refused(&self, _: &str, _: &str, _: &str) -> Option<&Resources> {
        None
    }
}

/// One grant: `resources` of agent `agents[agent]` to framework `frameworks[framework]`
/// in its role `frameworks[framework].roles[role]`. At most one grant per (agent,
/// framework, role) in a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub framework: usize,
    pub role: usize,
    pub agent: usize,
    /// Contained in the agent's available resources; allocatable.
    pub resources: Resources,
}

/// One allocation pass.
pub fn allocate(input: &AllocationInput<'_>, filters: &impl FilterLookup) -> Vec<Grant> {
    let mut pass = pass::Pass::new(input, true);
    pass.run(filters);
    pass.into_grants()
}

/// A role's allocation as the operator sees it (`agora roles`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoleReport {
    /// Every role that has a framework, a weight or a quota, and the ancestors of
    /// those, in name order.
    pub role: String,
    pub weight: f64,
    /// What the role and its descendants hold (scalars).
    pub allocated: Resources,
    /// Dominant share of `allocated` in the cluster (not divided by the weight).
    pub share: f64,
}

/// Every role's allocation and share, from the frameworks' allocations in `input`
/// (agents are not read).
pub fn role_report(input: &AllocationInput<'_>) -> Vec<RoleReport> {
    pass::Pass::new(input, false).report()
}
