//! One allocation pass over a compact copy of the input: the role tree with its
//! ordered sets, the (framework, role) clients, the agents' entries in fixed point,
//! and the quota bookkeeping. See the module docs of `allocator` for the rules.

use std::collections::{BTreeSet, HashMap};

use agora_core::Resources;
use agora_core::resources::{FIXED_POINT_SCALE, Quantity, UNRESERVED_ROLE};

use super::{AllocationInput, FilterLookup, Grant, RoleReport};

/// The root of the role tree (no role of its own, no frameworks).
const ROOT: usize = 0;
/// In a node's `children`, the tie-break rank of the node's own frameworks (Mesos'
/// virtual leaf); real children use their node index, which is at least 1.
const OWN: usize = 0;
/// An agent entry's `role` when it is unreserved.
const STAR: usize = usize::MAX;
/// An agent entry's `name` when it is not a scalar of the cluster total (ranges,
/// sets, or a scalar no share counts): it goes whole with a grant.
const OTHER: usize = usize::MAX;
/// "No limit" and "no cap".
const UNLIMITED: i64 = i64::MAX;

/// A share as a sort key: `f64` with a total order, so NaN cannot break a `BTreeSet`.
#[derive(Clone, Copy, Debug)]
struct Share(f64);

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Share {}
impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Which sweep is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Stage 1: roles under an unmet guarantee, up to their headroom.
    Guarantees,
    /// Stage 2: everyone, keeping the headroom unmet guarantees need.
    Fair,
}

/// The scalar names that shares are computed over: those of the cluster total.
struct Names<'a> {
    /// Sorted, unique.
    names: Vec<&'a str>,
    /// 1 / total of each name (0 where the total is 0), same order as `names`.
    inv_total: Vec<f64>,
    /// Index of `cpus` and `mem`, for the minimum allocatable.
    cpus: Option<usize>,
    mem: Option<usize>,
}

impl<'a> Names<'a> {
    fn new(total: &'a Resources) -> Self {
        let mut names: Vec<&'a str> = Vec::new();
        let mut totals: Vec<i64> = Vec::new();
        // Entries come sorted by (name, role), so one name's roles are adjacent.
        for (key, quantity) in total.iter() {
            if let Quantity::Scalar(v) = quantity {
                if names.last() == Some(&key.name.as_str()) {
                    if let Some(t) = totals.last_mut() {
                        *t = t.saturating_add(*v);
                    }
                } else {
                    names.push(key.name.as_str());
                    totals.push(*v);
                }
            }
        }
        let inv_total = totals
            .iter()
            .map(|&t| if t > 0 { 1.0 / t as f64 } else { 0.0 })
            .collect();
        let cpus = names.binary_search(&"cpus").ok();
        let mem = names.binary_search(&"mem").ok();
        Self {
            names,
            inv_total,
            cpus,
            mem,
        }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search(&name).ok()
    }

    /// Dominant share of `alloc` (indexed like `names`).
    fn share(&self, alloc: &[i64]) -> f64 {
        let mut share = 0.0;
        for (a, inv) in alloc.iter().zip(&self.inv_total) {
            let s = *a as f64 * inv;
            if s > share {
                share = s;
            }
        }
        share
    }

    /// Adds the scalars of `r` that share in the cluster into `into`.
    fn add_scalars(&self, r: &Resources, into: &mut [i64]) {
        for (key, quantity) in r.iter() {
            if let (Quantity::Scalar(v), Some(k)) = (quantity, self.index(&key.name))
                && let Some(slot) = into.get_mut(k)
            {
                *slot = slot.saturating_add(*v);
            }
        }
    }
}

/// A role in the tree.
struct Node<'a> {
    /// Full path; `""` for the root.
    name: &'a str,
    /// The root is its own parent.
    parent: usize,
    /// 0 for the root, 1 for top-level roles.
    depth: usize,
    /// Finite and above 0.
    weight: f64,
    /// Children with an active client below them, plus (rank `OWN`) the role's own
    /// active clients if any, keyed by (weighted share, rank). Invariant: each key
    /// equals the child's `key` (or this node's `own_key`).
    children: BTreeSet<(Share, usize)>,
    /// Weighted share of `alloc`: this node's key in its parent's `children`.
    key: Share,
    /// Weighted share of `own_alloc`.
    own_key: Share,
    /// The role's own active clients keyed by (share, client index).
    clients: BTreeSet<(Share, usize)>,
    /// Active clients in the subtree (own included).
    active: usize,
    /// Active clients of this role itself.
    own_active: usize,
    /// What the subtree holds, per name (fixed point).
    alloc: Vec<i64>,
    /// What the role's own clients hold.
    own_alloc: Vec<i64>,
    /// Quota fields: empty vectors unless the pass has guarantees (resp. limits).
    /// Guarantee per name (0: none).
    guarantee: Vec<i64>,
    /// Some role on the path root..=self guarantees a positive amount of the name.
    guaranteed_on_path: Vec<bool>,
    /// Limit per name (`UNLIMITED`: none).
    limit: Vec<i64>,
    /// Whether `limit` has any finite entry.
    has_limit: bool,
    /// Unallocated reservations for the subtree on the agents in the pass.
    reserved_free: Vec<i64>,
    /// max(unmet, children_need): what the subtree still needs toward guarantees.
    need: Vec<i64>,
    /// Σ need of the children.
    children_need: Vec<i64>,
}

/// One (framework, role) subscription.
struct Client<'a> {
    /// Index into `input.frameworks`.
    framework: usize,
    /// Index into that framework's `roles`.
    slot: usize,
    /// Its role's node.
    node: usize,
    id: &'a str,
    role: &'a str,
    /// Active framework and not suppressed in this role.
    active: bool,
    has_filters: bool,
    /// Share of `alloc`; its key in its node's `clients` while active.
    key: Share,
    /// What it holds in this role, per name.
    alloc: Vec<i64>,
}

/// One (name, role) entry of an agent's available resources.
#[derive(Clone, Copy)]
struct Entry {
    /// Index into `Names`, or `OTHER`.
    name: usize,
    /// Node of the role it is reserved for, or `STAR`.
    role: usize,
    /// What is left: thousandths for scalars; 1 (present) or 0 (granted) for `OTHER`
    /// non-scalars, the whole amount for `OTHER` scalars.
    left: i64,
}

/// Scratch space reused across candidates, so the hot loop does not allocate.
struct Scratch {
    /// Per entry of the current agent: how much the candidate would get.
    take: Vec<i64>,
    /// Per name: what limits still allow.
    lim: Vec<i64>,
    /// Per name: what quota headroom allows of unreserved resources.
    cap: Vec<i64>,
    /// Per name: headroom toward guarantees.
    head: Vec<i64>,
    /// Per name: what a grant adds.
    add: Vec<i64>,
    /// The offer built for a filter check, reused by the commit.
    offer: Option<Resources>,
}

pub(super) struct Pass<'a, 'i> {
    input: &'i AllocationInput<'a>,
    names: Names<'a>,
    /// Index 0 is the root; the rest in name order, so parents come before children
    /// and siblings' indices follow their names.
    nodes: Vec<Node<'a>>,
    /// In (framework id, role) order: ties in a role go to the lower id.
    clients: Vec<Client<'a>>,
    /// Every agent's entries, back to back.
    entries: Vec<Entry>,
    /// Per input agent: its range in `entries` (empty when draining or not read).
    spans: Vec<(usize, usize)>,
    has_guarantees: bool,
    has_limits: bool,
    /// Unreserved, unallocated amount per name on the agents in the pass (kept only
    /// with guarantees).
    free: Vec<i64>,
    min_cpus: i64,
    min_mem: i64,
    grants: Vec<Grant>,
    /// (client, agent) → index in `grants` of stage 1's grants, so that stage 2 adds
    /// to them instead of making a second grant.
    stage1_grants: HashMap<(usize, usize), usize>,
}

fn sanitize_weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 { w } else { 1.0 }
}

/// Units → thousandths, rounding; negative → 0; NaN or ±∞ → `None`.
fn to_fixed(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let scaled = (v.max(0.0) * FIXED_POINT_SCALE as f64).round();
    // Far beyond any real amount; keeps sums of these from overflowing.
    Some(scaled.min(1e15) as i64)
}

fn normalize_role(role: &str) -> &str {
    if role.is_empty() {
        UNRESERVED_ROLE
    } else {
        role
    }
}

fn add_into(into: &mut [i64], from: &[i64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(*b);
    }
}

impl<'a, 'i> Pass<'a, 'i> {
    pub(super) fn new(input: &'i AllocationInput<'a>, with_agents: bool) -> Self {
        let names = Names::new(input.cluster_total);
        let k = names.len();

        // Every role name that matters, with its ancestors.
        let mut role_names: BTreeSet<&'a str> = BTreeSet::new();
        let mut add_role = |role: &'a str| {
            let role = normalize_role(role);
            for (i, _) in role.match_indices('/') {
                if i > 0 {
                    role_names.insert(&role[..i]);
                }
            }
            role_names.insert(role);
        };
        for r in input.roles {
            add_role(r.name);
        }
        for f in input.frameworks {
            for r in &f.roles {
                add_role(r.role);
            }
        }
        if with_agents {
            for a in input.agents.iter().filter(|a| !a.draining) {
                for (key, _) in a.available.iter() {
                    if key.role != UNRESERVED_ROLE {
                        add_role(key.role.as_str());
                    }
                }
            }
        }

        let mut nodes: Vec<Node<'a>> = Vec::with_capacity(role_names.len() + 1);
        let mut index: HashMap<&'a str, usize> = HashMap::with_capacity(role_names.len());
        let new_node = |name: &'a str, parent: usize, depth: usize| Node {
            name,
            parent,
            depth,
            weight: 1.0,
            children: BTreeSet::new(),
            key: Share(0.0),
            own_key: Share(0.0),
            clients: BTreeSet::new(),
            active: 0,
            own_active: 0,
            alloc: vec![0; k],
            own_alloc: vec![0; k],
            guarantee: Vec::new(),
            guaranteed_on_path: Vec::new(),
            limit: Vec::new(),
            has_limit: false,
            reserved_free: Vec::new(),
            need: Vec::new(),
            children_need: Vec::new(),
        };
        nodes.push(new_node("", ROOT, 0));
        for name in role_names {
            // Every non-empty prefix was inserted too, and sorts before the name.
            let parent = name
                .rfind('/')
                .filter(|&i| i > 0)
                .and_then(|i| index.get(&name[..i]).copied())
                .unwrap_or(ROOT);
            let depth = nodes.get(parent).map_or(0, |p| p.depth) + 1;
            index.insert(name, nodes.len());
            nodes.push(new_node(name, parent, depth));
        }

        // Weights and quotas (the first entry of a role wins).
        let mut has_guarantees = false;
        let mut has_limits = false;
        let mut configured = vec![false; nodes.len()];
        for r in input.roles {
            let Some(&n) = index.get(normalize_role(r.name)) else {
                continue;
            };
            if std::mem::replace(&mut configured[n], true) {
                continue;
            }
            let node = &mut nodes[n];
            node.weight = sanitize_weight(r.weight);
            if let Some(g) = r.guarantee {
                let mut amounts = vec![0; k];
                names.add_scalars(g, &mut amounts);
                if amounts.iter().any(|&v| v > 0) {
                    node.guarantee = amounts;
                    has_guarantees = true;
                }
            }
            for (name, v) in &r.limit {
                if let (Some(i), Some(v)) = (names.index(name), to_fixed(*v)) {
                    if node.limit.is_empty() {
                        node.limit = vec![UNLIMITED; k];
                    }
                    node.limit[i] = node.limit[i].min(v);
                    node.has_limit = true;
                    has_limits = true;
                }
            }
        }

        // Clients in (framework id, role) order; duplicates read once.
        let mut order: Vec<(usize, usize)> = input
            .frameworks
            .iter()
            .enumerate()
            .flat_map(|(f, fw)| (0..fw.roles.len()).map(move |s| (f, s)))
            .collect();
        let key_of = |&(f, s): &(usize, usize)| {
            let fw = &input.frameworks[f];
            (fw.id, normalize_role(fw.roles[s].role))
        };
        order.sort_by(|a, b| key_of(a).cmp(&key_of(b)).then(a.cmp(b)));
        order.dedup_by(|later, earlier| key_of(later) == key_of(earlier));
        let mut clients: Vec<Client<'a>> = Vec::with_capacity(order.len());
        for (f, s) in order {
            let fw = &input.frameworks[f];
            let r = &fw.roles[s];
            let role = normalize_role(r.role);
            let Some(&node) = index.get(role) else {
                continue;
            };
            let mut alloc = vec![0; k];
            names.add_scalars(r.allocated, &mut alloc);
            clients.push(Client {
                framework: f,
                slot: s,
                node,
                id: fw.id,
                role,
                active: fw.active && !r.suppressed,
                has_filters: fw.has_filters,
                key: Share(names.share(&alloc)),
                alloc,
            });
        }
        for (c, client) in clients.iter().enumerate() {
            let node = &mut nodes[client.node];
            add_into(&mut node.own_alloc, &client.alloc);
            if client.active {
                node.own_active += 1;
                node.clients.insert((client.key, c));
            }
        }

        // Agents' entries.
        let mut entries = Vec::new();
        let mut spans = Vec::with_capacity(input.agents.len());
        if with_agents {
            for a in input.agents {
                let start = entries.len();
                if !a.draining {
                    for (key, quantity) in a.available.iter() {
                        let (name, mut left) = match quantity {
                            Quantity::Scalar(v) => (names.index(&key.name).unwrap_or(OTHER), *v),
                            _ => (OTHER, 1),
                        };
                        let role = if key.role == UNRESERVED_ROLE {
                            STAR
                        } else if let Some(&n) = index.get(key.role.as_str()) {
                            n
                        } else {
                            // Every reservation's role was added above; were one
                            // missing, its resources must not pass for unreserved.
                            left = 0;
                            ROOT
                        };
                        // One entry per position of `available`, so that `pick`
                        // positions match.
                        entries.push(Entry { name, role, left });
                    }
                }
                spans.push((start, entries.len()));
            }
        }

        let mut pass = Pass {
            input,
            names,
            nodes,
            clients,
            entries,
            spans,
            has_guarantees,
            has_limits,
            free: Vec::new(),
            min_cpus: to_fixed(input.min_allocatable.cpus).unwrap_or(0),
            min_mem: to_fixed(input.min_allocatable.mem).unwrap_or(0),
            grants: Vec::new(),
            stage1_grants: HashMap::new(),
        };
        pass.aggregate();
        if pass.has_guarantees {
            pass.init_quota();
        }
        pass
    }

    /// Sums allocations and active counts up the tree and fills the ordered sets.
    fn aggregate(&mut self) {
        for n in 0..self.nodes.len() {
            let node = &mut self.nodes[n];
            node.alloc.clone_from(&node.own_alloc);
            node.active = node.own_active;
        }
        // Children have higher indices than their parents.
        for n in (1..self.nodes.len()).rev() {
            let (parent, active) = (self.nodes[n].parent, self.nodes[n].active);
            let alloc = std::mem::take(&mut self.nodes[n].alloc);
            add_into(&mut self.nodes[parent].alloc, &alloc);
            self.nodes[n].alloc = alloc;
            self.nodes[parent].active += active;
        }
        for n in 1..self.nodes.len() {
            let key = Share(self.names.share(&self.nodes[n].alloc) / self.nodes[n].weight);
            let own_key = Share(self.names.share(&self.nodes[n].own_alloc) / self.nodes[n].weight);
            let node = &mut self.nodes[n];
            node.key = key;
            node.own_key = own_key;
            if node.own_active > 0 {
                node.children.insert((own_key, OWN));
            }
            if node.active > 0 {
                let parent = node.parent;
                self.nodes[parent].children.insert((key, n));
            }
        }
    }

    /// Fills the quota fields: reservations, `free`, and `need` bottom-up.
    fn init_quota(&mut self) {
        let k = self.names.len();
        for node in &mut self.nodes {
            if node.guarantee.is_empty() {
                node.guarantee = vec![0; k];
            }
            node.reserved_free = vec![0; k];
            node.need = vec![0; k];
            node.children_need = vec![0; k];
        }
        for n in 0..self.nodes.len() {
            let parent = self.nodes[n].parent;
            let inherited = if n == ROOT {
                vec![false; k]
            } else {
                self.nodes[parent].guaranteed_on_path.clone()
            };
            let node = &mut self.nodes[n];
            node.guaranteed_on_path = inherited
                .iter()
                .zip(&node.guarantee)
                .map(|(&up, &g)| up || g > 0)
                .collect();
        }
        self.free = vec![0; k];
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if e.name == OTHER {
                continue;
            }
            if e.role == STAR {
                self.free[e.name] = self.free[e.name].saturating_add(e.left);
            } else {
                self.add_reserved_free(e.role, e.name, e.left);
            }
        }
        for n in (1..self.nodes.len()).rev() {
            for name in 0..k {
                let need = self.unmet(n, name).max(self.nodes[n].children_need[name]);
                self.nodes[n].need[name] = need;
                let parent = self.nodes[n].parent;
                let sum = &mut self.nodes[parent].children_need[name];
                *sum = sum.saturating_add(need);
            }
        }
    }

    fn add_reserved_free(&mut self, role: usize, name: usize, amount: i64) {
        let mut n = role;
        loop {
            let slot = &mut self.nodes[n].reserved_free[name];
            *slot = slot.saturating_add(amount);
            if n == ROOT {
                break;
            }
            n = self.nodes[n].parent;
        }
    }

    fn unmet(&self, n: usize, name: usize) -> i64 {
        let node = &self.nodes[n];
        let consumption = node.alloc[name].saturating_add(node.reserved_free[name]);
        (node.guarantee[name] - consumption).max(0)
    }

    /// What unmet guarantees still need of each name, cluster-wide.
    fn required(&self, name: usize) -> i64 {
        self.nodes[ROOT].children_need[name]
    }

    fn any_required(&self) -> bool {
        self.has_guarantees && self.nodes[ROOT].children_need.iter().any(|&v| v > 0)
    }

    fn is_ancestor_or_self(&self, ancestor: usize, mut n: usize) -> bool {
        let depth = self.nodes[ancestor].depth;
        while self.nodes[n].depth > depth {
            n = self.nodes[n].parent;
        }
        n == ancestor
    }

    pub(super) fn run(&mut self, filters: &impl FilterLookup) {
        let k = self.names.len();
        let mut scratch = Scratch {
            take: Vec::new(),
            lim: vec![0; k],
            cap: vec![0; k],
            head: vec![0; k],
            add: vec![0; k],
            offer: None,
        };
        if self.any_required() {
            self.sweep(Stage::Guarantees, filters, &mut scratch);
        }
        self.sweep(Stage::Fair, filters, &mut scratch);
    }

    fn sweep(&mut self, stage: Stage, filters: &impl FilterLookup, scratch: &mut Scratch) {
        for agent in 0..self.spans.len() {
            if stage == Stage::Guarantees && !self.any_required() {
                return;
            }
            let first = self.grants.len();
            // Each role takes what it can of an agent at once, so an agent sees at
            // most one grant per role per stage; the bound only guards that.
            for _ in 0..=self.nodes.len() {
                if !self.agent_may_allocate(agent) {
                    break;
                }
                let Some(client) = self.find(ROOT, agent, stage, filters, scratch) else {
                    break;
                };
                self.commit(client, agent, stage, first, scratch);
            }
        }
    }

    /// Whether what is left on the agent could make any allocatable grant.
    fn agent_may_allocate(&self, agent: usize) -> bool {
        let (start, end) = self.spans[agent];
        let (mut cpus, mut mem) = (0i64, 0i64);
        for e in &self.entries[start..end] {
            if Some(e.name) == self.names.cpus {
                cpus = cpus.saturating_add(e.left);
            } else if Some(e.name) == self.names.mem {
                mem = mem.saturating_add(e.left);
            }
        }
        (cpus > 0 && cpus >= self.min_cpus) || (mem > 0 && mem >= self.min_mem)
    }

    /// Whether the agent has something left only the subtree of `n` could take:
    /// unreserved scalars, or reservations for `n`, an ancestor or a descendant.
    fn agent_useful_below(&self, agent: usize, n: usize) -> bool {
        let (start, end) = self.spans[agent];
        self.entries[start..end].iter().any(|e| {
            e.left > 0
                && e.name != OTHER
                && (e.role == STAR
                    || self.is_ancestor_or_self(e.role, n)
                    || self.is_ancestor_or_self(n, e.role))
        })
    }

    /// The first client below `n`, in DRF order, that may take something of the agent;
    /// `scratch.take` then holds what it takes.
    fn find(
        &self,
        n: usize,
        agent: usize,
        stage: Stage,
        filters: &impl FilterLookup,
        scratch: &mut Scratch,
    ) -> Option<usize> {
        for &(_, child) in &self.nodes[n].children {
            if child == OWN {
                if !self.evaluate(n, agent, stage, scratch) {
                    continue;
                }
                for &(_, c) in &self.nodes[n].clients {
                    if !self.filtered(c, agent, filters, scratch) {
                        return Some(c);
                    }
                }
                continue;
            }
            if stage == Stage::Guarantees
                && n == ROOT
                && self.nodes[child].need.iter().all(|&v| v == 0)
            {
                continue;
            }
            if !self.agent_useful_below(agent, child) {
                continue;
            }
            if let Some(c) = self.find(child, agent, stage, filters, scratch) {
                return Some(c);
            }
        }
        None
    }

    /// Per name, what limits on the path of `x` still allow it to take.
    fn fill_limits(&self, x: usize, lim: &mut [i64]) {
        lim.fill(UNLIMITED);
        if !self.has_limits {
            return;
        }
        let mut n = x;
        while n != ROOT {
            let node = &self.nodes[n];
            if node.has_limit {
                for ((l, &limit), &held) in lim.iter_mut().zip(&node.limit).zip(&node.alloc) {
                    if limit != UNLIMITED {
                        *l = (*l).min((limit - held).max(0));
                    }
                }
            }
            n = node.parent;
        }
    }

    /// Per name, how much of a grant of unreserved resources to `x` counts toward
    /// guarantees (lowers `required`): with `g` given, `required` drops by
    /// `min(g, head)`. Worked out by letting `x`'s allocation grow without bound and
    /// following how each `need` on the path changes.
    fn fill_headroom(&self, x: usize, head: &mut [i64]) {
        for (name, h) in head.iter_mut().enumerate() {
            if self.required(name) == 0 {
                *h = 0;
                continue;
            }
            let node = &self.nodes[x];
            let mut d = node.need[name] - node.children_need[name];
            let mut n = x;
            while self.nodes[n].parent != ROOT {
                let p = &self.nodes[self.nodes[n].parent];
                d = p.need[name] - (p.children_need[name] - d);
                n = self.nodes[n].parent;
            }
            *h = d.max(0);
        }
    }

    /// What role `x` would get of the agent in this stage, into `scratch.take`;
    /// whether that is a grant worth making.
    fn evaluate(&self, x: usize, agent: usize, stage: Stage, scratch: &mut Scratch) -> bool {
        let (start, end) = self.spans[agent];
        scratch.offer = None;
        scratch.take.clear();
        scratch.take.resize(end - start, 0);
        self.fill_limits(x, &mut scratch.lim);
        if self.has_guarantees {
            self.fill_headroom(x, &mut scratch.head);
            let on_path = &self.nodes[x].guaranteed_on_path;
            for (name, cap) in scratch.cap.iter_mut().enumerate() {
                let surplus = (self.free[name] - self.required(name)).max(0);
                let head = scratch.head[name];
                *cap = match stage {
                    Stage::Guarantees if on_path[name] => head,
                    Stage::Guarantees => surplus,
                    Stage::Fair => head.saturating_add(surplus),
                };
            }
        } else {
            scratch.cap.fill(UNLIMITED);
        }
        let entries = &self.entries[start..end];
        let (mut cpus, mut mem, mut scalars, mut toward) = (0i64, 0i64, false, false);
        // Reservations first: they are the role's anyway, and limits count them.
        for reserved in [true, false] {
            for (i, e) in entries.iter().enumerate() {
                if e.left <= 0 || e.name == OTHER || (e.role != STAR) != reserved {
                    continue;
                }
                let k = e.name;
                let t = if reserved {
                    if !self.is_ancestor_or_self(e.role, x) {
                        continue;
                    }
                    e.left.min(scratch.lim[k])
                } else {
                    e.left.min(scratch.lim[k]).min(scratch.cap[k])
                };
                if t <= 0 {
                    continue;
                }
                scratch.lim[k] -= t;
                if !reserved {
                    scratch.cap[k] = scratch.cap[k].saturating_sub(t);
                    if stage == Stage::Guarantees && self.nodes[x].guaranteed_on_path[k] {
                        toward = true;
                    }
                }
                scratch.take[i] = t;
                scalars = true;
                if Some(k) == self.names.cpus {
                    cpus += t;
                } else if Some(k) == self.names.mem {
                    mem += t;
                }
            }
        }
        let allocatable = (cpus > 0 && cpus >= self.min_cpus) || (mem > 0 && mem >= self.min_mem);
        if !scalars || !allocatable || (stage == Stage::Guarantees && !toward) {
            return false;
        }
        // Ranges, sets and unknown scalars go whole with the grant.
        for (i, e) in entries.iter().enumerate() {
            if e.name == OTHER
                && e.left > 0
                && (e.role == STAR || self.is_ancestor_or_self(e.role, x))
            {
                scratch.take[i] = e.left;
            }
        }
        true
    }

    /// Whether a live filter holds the evaluated grant back from client `c`. Builds the
    /// offer only for clients that may have filters, and keeps it for the commit.
    fn filtered(
        &self,
        c: usize,
        agent: usize,
        filters: &impl FilterLookup,
        scratch: &mut Scratch,
    ) -> bool {
        let client = &self.clients[c];
        if !client.has_filters {
            return false;
        }
        let a = &self.input.agents[agent];
        let Some(refused) = filters.refused(client.id, client.role, a.id) else {
            return false;
        };
        let offer = match scratch.offer.take() {
            Some(offer) => offer,
            None => self.build_offer(agent, &scratch.take),
        };
        let held = refused.contains(&offer);
        scratch.offer = Some(offer);
        held
    }

    fn build_offer(&self, agent: usize, take: &[i64]) -> Resources {
        self.input.agents[agent]
            .available
            .pick(|i, _, _| take.get(i).copied().filter(|&t| t > 0))
    }

    /// Grants `scratch.take` of the agent to client `c` and updates every sum and
    /// order it changes.
    fn commit(
        &mut self,
        c: usize,
        agent: usize,
        stage: Stage,
        first: usize,
        scratch: &mut Scratch,
    ) {
        let (start, end) = self.spans[agent];
        let x = self.clients[c].node;
        scratch.add.fill(0);
        for i in start..end {
            let t = scratch.take.get(i - start).copied().unwrap_or(0);
            if t <= 0 {
                continue;
            }
            let e = self.entries[i];
            if e.name == OTHER {
                self.entries[i].left = 0;
                continue;
            }
            self.entries[i].left = e.left - t;
            scratch.add[e.name] += t;
            if self.has_guarantees {
                if e.role == STAR {
                    self.free[e.name] -= t;
                } else {
                    self.add_reserved_free(e.role, e.name, -t);
                }
            }
        }
        let offer = match scratch.offer.take() {
            Some(offer) => offer,
            None => self.build_offer(agent, &scratch.take),
        };

        // The client and its role.
        let client = &mut self.clients[c];
        add_into(&mut client.alloc, &scratch.add);
        let old = client.key;
        client.key = Share(self.names.share(&client.alloc));
        let new = client.key;
        let node = &mut self.nodes[x];
        node.clients.remove(&(old, c));
        node.clients.insert((new, c));
        add_into(&mut node.own_alloc, &scratch.add);
        let old = node.own_key;
        node.own_key = Share(self.names.share(&node.own_alloc) / node.weight);
        let new = node.own_key;
        node.children.remove(&(old, OWN));
        node.children.insert((new, OWN));
        // The role and its ancestors.
        let mut n = x;
        loop {
            let node = &mut self.nodes[n];
            add_into(&mut node.alloc, &scratch.add);
            if n == ROOT {
                break;
            }
            let old = node.key;
            node.key = Share(self.names.share(&node.alloc) / node.weight);
            let (new, parent) = (node.key, node.parent);
            let siblings = &mut self.nodes[parent].children;
            siblings.remove(&(old, n));
            siblings.insert((new, n));
            n = parent;
        }
        if self.has_guarantees {
            self.update_need(x);
        }

        let client = &self.clients[c];
        let existing = self.grants[first..]
            .iter()
            .position(|g| g.framework == client.framework && g.role == client.slot)
            .map(|p| p + first)
            .or_else(|| match stage {
                Stage::Fair => self.stage1_grants.get(&(c, agent)).copied(),
                Stage::Guarantees => None,
            });
        match existing.and_then(|g| self.grants.get_mut(g)) {
            Some(grant) => grant.resources.add(&offer),
            None => {
                if stage == Stage::Guarantees {
                    self.stage1_grants.insert((c, agent), self.grants.len());
                }
                self.grants.push(Grant {
                    framework: client.framework,
                    role: client.slot,
                    agent,
                    resources: offer,
                });
            }
        }
    }

    /// Recomputes `need` on the path of `x` (whose consumption, or whose ancestors'
    /// reservations, changed).
    fn update_need(&mut self, x: usize) {
        let mut n = x;
        while n != ROOT {
            let parent = self.nodes[n].parent;
            for name in 0..self.names.len() {
                let need = self.unmet(n, name).max(self.nodes[n].children_need[name]);
                let old = std::mem::replace(&mut self.nodes[n].need[name], need);
                let sum = &mut self.nodes[parent].children_need[name];
                *sum = sum.saturating_add(need - old);
            }
            n = parent;
        }
    }

    pub(super) fn into_grants(self) -> Vec<Grant> {
        self.grants
    }

    pub(super) fn report(&self) -> Vec<RoleReport> {
        self.nodes
            .iter()
            .skip(1)
            .map(|node| {
                let scalars: Vec<(&str, f64)> = self
                    .names
                    .names
                    .iter()
                    .zip(&node.alloc)
                    .filter(|(_, v)| **v > 0)
                    .map(|(name, v)| (*name, *v as f64 / FIXED_POINT_SCALE as f64))
                    .collect();
                RoleReport {
                    role: node.name.to_string(),
                    weight: node.weight,
                    allocated: Resources::scalars(&scalars).unwrap_or_default(),
                    share: self.names.share(&node.alloc),
                }
            })
            .collect()
    }
}
