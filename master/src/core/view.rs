//! The snapshot readers see (operator API, `/api/v1/state`, the CLI) and the operator
//! event stream. Published by the core after a batch of changes through a watch
//! channel, so a large query never waits on, or stalls, the core.
//!
//! # Publishing at scale
//! Rebuilding every summary after every batch costs O(tasks): with 100,000 tasks
//! that is most of the core's time. So the core keeps a [`ViewCache`]: every
//! agent, framework and task summary as last published, each immutable behind an
//! `Arc`, kept in key order in [`SortedChunks`]. After a batch only what changed is
//! rebuilt:
//! - tasks named in `dirty_tasks` (`insert_task`, `set_task_state` and
//!   `retire_task`, the only places that change a task, mark them); a framework
//!   whose live-task count disagrees with the cache is resynchronised whole, so a
//!   change made elsewhere cannot leave the view wrong for long;
//! - agents and frameworks whose summary would differ, found by comparing the few
//!   fields that change (far cheaper than building a summary);
//! - retired tasks join the completed list as they retire.
//!
//! Publishing then clones chunk handles: O(changes + chunks), not O(tasks). Gauges
//! are set from counts kept the same way.
//!
//! Readers get a [`ClusterView`]: shared chunks. The protobuf `ClusterState`
//! (gRPC) is assembled from it on first demand, and `/api/v1/state`'s JSON from
//! per-item renderings cached in the items and per-chunk joins cached in the
//! chunks, so what no one changed is never rendered twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use agora_core::Resources;
use agora_core::task_state::is_terminal;
use agora_proto as pb;
use axum::body::Bytes;

use super::{AgentEntry, FrameworkEntry, MasterCore, TaskEntry};
use crate::metrics::ClusterCounts;
use crate::offer_book::OfferBook;

/// Most items in one chunk: a change copies at most this many `Arc`s, and a publish
/// clones one handle per this many items.
const CHUNK_MAX: usize = 256;
/// A chunk that shrinks below this is merged with a neighbour when they fit in one.
const CHUNK_MIN: usize = CHUNK_MAX / 4;

/// (framework id, task id).
type TaskKey = (String, String);
/// (framework id, task id, retirement number): a task id can retire twice (relaunched
/// under the same id after its end was acknowledged).
type CompletedKey = (String, String, u64);
/// (hostname, agent id): agents are listed by hostname.
type AgentKey = (String, String);
/// (registration time, framework id): frameworks are listed oldest first.
type FrameworkKey = (Seconds, String);

/// Seconds since the epoch, ordered by `f64::total_cmp` so it can be a key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seconds(f64);

impl PartialEq for Seconds {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for Seconds {}

impl PartialOrd for Seconds {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Seconds {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One published summary under its key. Immutable: a change makes a new item.
pub(crate) struct Item<K, T> {
    /// Where it sorts; unique within its [`SortedChunks`].
    key: K,
    /// Shared with another item when the same summary is listed twice (a task's
    /// last live summary becomes its completed one).
    body: Arc<Rendered<T>>,
}

/// A summary and, once someone asked, its JSON; immutable, so the rendering never
/// goes stale.
pub(crate) struct Rendered<T> {
    /// The summary as published.
    value: T,
    /// `serde_json` of `value`, rendered on first demand.
    json: OnceLock<Box<[u8]>>,
}

impl<K, T> Item<K, T> {
    fn value(&self) -> &T {
        &self.body.value
    }
}

impl<K, T: serde::Serialize> Item<K, T> {
    fn new(key: K, value: T) -> Arc<Self> {
        Arc::new(Item {
            key,
            body: Arc::new(Rendered {
                value,
                json: OnceLock::new(),
            }),
        })
    }

    /// An item of `key` with `other`'s summary (and rendering).
    fn sharing<L>(key: K, other: &Item<L, T>) -> Arc<Self> {
        Arc::new(Item {
            key,
            body: other.body.clone(),
        })
    }

    fn json(&self) -> &[u8] {
        self.body.json.get_or_init(|| {
            // Serializing a message to JSON cannot fail (no maps with non-string keys);
            // should it ever, the reader sees null rather than nothing.
            serde_json::to_vec(&self.body.value)
                .unwrap_or_else(|_| b"null".to_vec())
                .into_boxed_slice()
        })
    }
}

/// Consecutive items of a [`SortedChunks`].
pub(crate) struct Chunk<K, T> {
    /// Sorted by key; never empty inside a [`SortedChunks`].
    items: Vec<Arc<Item<K, T>>>,
    /// The items' JSON joined by commas, rendered on first demand. A chunk is
    /// changed only through `Arc::make_mut`, which clones it without this, and every
    /// change in place resets it.
    json: OnceLock<Bytes>,
}

impl<K, T> Clone for Chunk<K, T> {
    fn clone(&self) -> Self {
        Chunk {
            items: self.items.clone(),
            json: OnceLock::new(),
        }
    }
}

impl<K, T: serde::Serialize> Chunk<K, T> {
    fn of(items: Vec<Arc<Item<K, T>>>) -> Arc<Self> {
        Arc::new(Chunk {
            items,
            json: OnceLock::new(),
        })
    }

    fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| {
                let parts: Vec<&[u8]> = self.items.iter().map(|item| item.json()).collect();
                let size = parts.iter().map(|p| p.len() + 1).sum();
                let mut out = Vec::with_capacity(size);
                for (n, part) in parts.into_iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(part);
                }
                Bytes::from(out)
            })
            .clone()
    }
}

/// A sorted map of immutable items in chunks of at most [`CHUNK_MAX`], so that a
/// snapshot ([`SortedChunks::snapshot`]) clones one handle per chunk and a change
/// copies one chunk (only if a snapshot still shares it).
pub(crate) struct SortedChunks<K, T> {
    /// Each chunk under its first item's key. Invariant: chunks are not empty, hold
    /// at most `CHUNK_MAX` items, and every key of a chunk is below the next chunk's
    /// first key.
    chunks: BTreeMap<K, Arc<Chunk<K, T>>>,
    /// Items over all chunks.
    len: usize,
}

impl<K, T> Default for SortedChunks<K, T> {
    fn default() -> Self {
        SortedChunks {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, T: serde::Serialize> SortedChunks<K, T> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The key of the chunk that holds `key`, or would: the last one starting at or
    /// below it, else the first.
    fn home(&self, key: &K) -> Option<K> {
        self.chunks
            .range(..=key)
            .next_back()
            .or_else(|| self.chunks.iter().next())
            .map(|(home, _)| home.clone())
    }

    fn get(&self, key: &K) -> Option<&Arc<Item<K, T>>> {
        let (_, chunk) = self.chunks.range(..=key).next_back()?;
        let at = chunk.items.binary_search_by(|i| i.key.cmp(key)).ok()?;
        chunk.items.get(at)
    }

    /// Inserts `item`, or replaces the item of its key; returns the replaced one.
    pub(crate) fn upsert(&mut self, item: Arc<Item<K, T>>) -> Option<Arc<Item<K, T>>> {
        let Some(home) = self.home(&item.key) else {
            self.chunks.insert(item.key.clone(), Chunk::of(vec![item]));
            self.len = 1;
            return None;
        };
        let chunk = Arc::make_mut(self.chunks.get_mut(&home)?);
        chunk.json = OnceLock::new();
        match chunk.items.binary_search_by(|i| i.key.cmp(&item.key)) {
            Ok(at) => chunk
                .items
                .get_mut(at)
                .map(|slot| std::mem::replace(slot, item)),
            Err(at) => {
                chunk.items.insert(at, item);
                self.len += 1;
                if at == 0 || chunk.items.len() > CHUNK_MAX {
                    self.rechunk(&home);
                }
                None
            }
        }
    }

    /// Removes the item of `key`; returns it.
    pub(crate) fn remove(&mut self, key: &K) -> Option<Arc<Item<K, T>>> {
        let (home, at) = {
            let (home, chunk) = self.chunks.range(..=key).next_back()?;
            let at = chunk.items.binary_search_by(|i| i.key.cmp(key)).ok()?;
            (home.clone(), at)
        };
        let chunk = Arc::make_mut(self.chunks.get_mut(&home)?);
        chunk.json = OnceLock::new();
        let removed = chunk.items.remove(at);
        self.len -= 1;
        if at == 0 || chunk.items.len() < CHUNK_MIN {
            self.rechunk(&home);
        }
        Some(removed)
    }

    /// Removes every item `keep` refuses; returns them. Touches only the chunks
    /// that lose something.
    pub(crate) fn remove_where(
        &mut self,
        mut gone: impl FnMut(&Item<K, T>) -> bool,
    ) -> Vec<Arc<Item<K, T>>> {
        let homes: Vec<K> = self
            .chunks
            .iter()
            .filter(|(_, chunk)| chunk.items.iter().any(|i| gone(i)))
            .map(|(home, _)| home.clone())
            .collect();
        let mut removed = Vec::new();
        for home in homes {
            let Some(chunk) = self.chunks.remove(&home) else {
                continue;
            };
            let items =
                Arc::try_unwrap(chunk).map_or_else(|shared| shared.items.clone(), |c| c.items);
            let (out, kept): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| gone(i));
            self.len -= out.len();
            removed.extend(out);
            if let Some(first) = kept.first() {
                self.chunks.insert(first.key.clone(), Chunk::of(kept));
            }
        }
        removed
    }

    /// Restores the invariant around the chunk stored under `home` after a change:
    /// re-keys it, splits it when too large, merges it with a neighbour when small.
    fn rechunk(&mut self, home: &K) {
        let Some(chunk) = self.chunks.remove(home) else {
            return;
        };
        let mut items =
            Arc::try_unwrap(chunk).map_or_else(|shared| shared.items.clone(), |c| c.items);
        if items.len() < CHUNK_MIN {
            let before = self
                .chunks
                .range(..home)
                .next_back()
                .filter(|(_, c)| c.items.len() + items.len() <= CHUNK_MAX)
                .map(|(k, _)| k.clone());
            if let Some(before) = before
                && let Some(chunk) = self.chunks.remove(&before)
            {
                let mut merged = chunk.items.clone();
                merged.append(&mut items);
                items = merged;
            } else {
                let after = self
                    .chunks
                    .range((Bound::Excluded(home), Bound::Unbounded))
                    .next()
                    .filter(|(_, c)| c.items.len() + items.len() <= CHUNK_MAX)
                    .map(|(k, _)| k.clone());
                if let Some(after) = after
                    && let Some(chunk) = self.chunks.remove(&after)
                {
                    items.extend(chunk.items.iter().cloned());
                }
            }
        }
        if items.len() > CHUNK_MAX {
            let tail = items.split_off(items.len() / 2);
            if let Some(first) = tail.first() {
                self.chunks.insert(first.key.clone(), Chunk::of(tail));
            }
        }
        if let Some(first) = items.first() {
            self.chunks.insert(first.key.clone(), Chunk::of(items));
        }
    }

    /// The chunks as they are now; later changes do not show in it.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Chunk<K, T>>> {
        self.chunks.values().cloned().collect()
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<K> {
        self.chunks
            .values()
            .flat_map(|c| c.items.iter().map(|i| i.key.clone()))
            .collect()
    }

    #[cfg(test)]
    fn check(&self) {
        let mut previous: Option<&K> = None;
        let mut len = 0;
        for (home, chunk) in &self.chunks {
            assert!(!chunk.items.is_empty(), "an empty chunk");
            assert!(chunk.items.len() <= CHUNK_MAX, "an oversized chunk");
            assert!(chunk.items[0].key == *home, "a chunk under a wrong key");
            for item in &chunk.items {
                assert!(previous.is_none_or(|p| *p < item.key), "out of order");
                previous = Some(&item.key);
                len += 1;
            }
        }
        assert_eq!(len, self.len);
    }
}

/// A published snapshot: the summaries of the moment, shared with the core's cache.
pub(crate) struct ClusterView {
    /// The master that published it.
    master_info: pb::MasterInfo,
    /// By hostname, then id.
    agents: Vec<Arc<Chunk<AgentKey, pb::AgentSummary>>>,
    /// Oldest registration first.
    frameworks: Vec<Arc<Chunk<FrameworkKey, pb::FrameworkSummary>>>,
    /// By framework id, then task id.
    tasks: Vec<Arc<Chunk<TaskKey, pb::TaskSummary>>>,
    /// By framework id, then task id, then retirement.
    completed: Vec<Arc<Chunk<CompletedKey, pb::TaskSummary>>>,
}

/// Appends `chunks`' JSON to `parts` as the elements of one JSON array.
fn push_array<K, T: serde::Serialize>(parts: &mut Vec<Bytes>, chunks: &[Arc<Chunk<K, T>>]) {
    parts.push(Bytes::from_static(b"["));
    for (n, chunk) in chunks.iter().enumerate() {
        if n > 0 {
            parts.push(Bytes::from_static(b","));
        }
        parts.push(chunk.json());
    }
    parts.push(Bytes::from_static(b"]"));
}

fn values<K, T: Clone>(chunks: &[Arc<Chunk<K, T>>]) -> Vec<T> {
    chunks
        .iter()
        .flat_map(|c| c.items.iter().map(|i| i.value().clone()))
        .collect()
}

fn json_of(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

impl ClusterView {
    /// Only `master_info`: what a follower, or a leader before its first publish, shows.
    pub(crate) fn empty(master_info: pb::MasterInfo) -> Self {
        ClusterView {
            master_info,
            agents: Vec::new(),
            frameworks: Vec::new(),
            tasks: Vec::new(),
            completed: Vec::new(),
        }
    }

    /// The snapshot as the protobuf message, with `group` set. Copies every summary:
    /// O(cluster), paid by the reader, never by the core.
    pub(crate) fn state_with_group(&self, group: pb::MasterGroup) -> pb::ClusterState {
        pb::ClusterState {
            master_info: Some(self.master_info.clone()),
            agents: values(&self.agents),
            frameworks: values(&self.frameworks),
            tasks: values(&self.tasks),
            completed_tasks: values(&self.completed),
            group: Some(group),
        }
    }

    /// Renders whatever `json_parts` would render now, so that a later call finds it
    /// ready.
    pub(crate) fn render(&self) {
        for chunk in &self.agents {
            chunk.json();
        }
        for chunk in &self.frameworks {
            chunk.json();
        }
        for chunk in &self.tasks {
            chunk.json();
        }
        for chunk in &self.completed {
            chunk.json();
        }
    }

    /// `state_with_group(group)` as JSON, in pieces to be sent one after another
    /// (exactly what `serde_json` makes of the message). Renders only what no
    /// earlier call rendered; can take a while for a large cluster's first call, so
    /// call it off the async runtime.
    pub(crate) fn json_parts(&self, group: &pb::MasterGroup) -> Vec<Bytes> {
        let mut parts = Vec::with_capacity(
            16 + 2
                * (self.agents.len()
                    + self.frameworks.len()
                    + self.tasks.len()
                    + self.completed.len()),
        );
        parts.push(Bytes::from_static(b"{\"master_info\":"));
        parts.push(json_of(&self.master_info));
        parts.push(Bytes::from_static(b",\"agents\":"));
        push_array(&mut parts, &self.agents);
        parts.push(Bytes::from_static(b",\"frameworks\":"));
        push_array(&mut parts, &self.frameworks);
        parts.push(Bytes::from_static(b",\"tasks\":"));
        push_array(&mut parts, &self.tasks);
        parts.push(Bytes::from_static(b",\"completed_tasks\":"));
        push_array(&mut parts, &self.completed);
        parts.push(Bytes::from_static(b",\"group\":"));
        parts.push(json_of(group));
        parts.push(Bytes::from_static(b"}"));
        parts
    }
}

/// What an agent's published summary was built from, to tell cheaply whether it
/// must be built again.
struct AgentBasis {
    /// Its key in `ViewCache::agents`.
    key: AgentKey,
    /// Its `AgentSummary.status` (see `agent_status`).
    status: &'static str,
    /// Its `total` and `used` when the summary was built.
    total: Resources,
    used: Resources,
    /// Empty when nothing of it is offered.
    offered: Resources,
    /// The published item, whose `agent_info` is compared with the agent's.
    item: Arc<Item<AgentKey, pb::AgentSummary>>,
}

/// What a framework's published summary was built from.
struct FrameworkBasis {
    /// Its key in `ViewCache::frameworks`.
    key: FrameworkKey,
    /// The summary's fields that change, as they were when it was built.
    connected: bool,
    used: Resources,
    /// Empty when nothing is offered to it.
    offered: Resources,
    active_tasks: u32,
    disconnected_time: f64,
    /// The published item, whose `framework_info` is compared with the framework's.
    item: Arc<Item<FrameworkKey, pb::FrameworkSummary>>,
}

/// Per framework: its tasks in the cache.
#[derive(Default, Clone, Copy)]
struct TaskCounts {
    /// Items in `ViewCache::tasks` (terminal ones not yet retired included); equal to
    /// the framework's `tasks.len()` once a publish is done.
    live: usize,
    /// Of which not terminal.
    active: u32,
}

/// The core's copy of what it last published; see the module documentation.
#[derive(Default)]
pub(crate) struct ViewCache {
    /// Every live task's summary.
    tasks: SortedChunks<TaskKey, pb::TaskSummary>,
    /// Tasks whose summary must be rebuilt, or dropped, at the next publish.
    dirty_tasks: HashSet<TaskKey>,
    /// Retired tasks: the union of every framework's `completed`.
    completed: SortedChunks<CompletedKey, pb::TaskSummary>,
    /// Framework id → the keys of its retired tasks in `completed`, oldest first: a
    /// mirror of `FrameworkEntry::completed`.
    completed_order: HashMap<String, VecDeque<CompletedKey>>,
    /// Numbers retirements so that `CompletedKey`s are unique.
    retirements: u64,
    /// Framework id → tasks retired since the last publish, in order: (task id,
    /// whether its live summary was current when it retired, so the completed list
    /// can share it). They are the last entries of the framework's `completed`.
    retired: HashMap<String, Vec<(String, bool)>>,
    /// Framework id → its tasks in `tasks`.
    task_counts: HashMap<String, TaskCounts>,
    /// Task state → items of `tasks` in it. Entries stay at 0 rather than vanish, so
    /// the gauge of a state that emptied reads 0.
    tasks_by_state: BTreeMap<i32, i64>,
    /// Every agent's summary.
    agents: SortedChunks<AgentKey, pb::AgentSummary>,
    /// Agent id → what its summary in `agents` was built from.
    agent_basis: HashMap<String, AgentBasis>,
    /// Agents whose summary may have changed since the last publish (their tasks
    /// or `used` changed); offers are tracked by the offer book.
    touched_agents: HashSet<String>,
    /// Every framework's summary.
    frameworks: SortedChunks<FrameworkKey, pb::FrameworkSummary>,
    /// Framework id → what its summary in `frameworks` was built from.
    framework_basis: HashMap<String, FrameworkBasis>,
    /// Frameworks whose summary may have changed since the last publish.
    touched_frameworks: HashSet<String>,
    /// Something changed that is not tracked (a registration, a disconnection,
    /// maintenance, a timer...): the next publish compares every agent and framework.
    /// Starts false; the first publish sees every agent as new anyway.
    compare_everything: bool,
    /// Agent status → agents in `agent_basis` with it; statuses that emptied stay at 0.
    agents_by_status: BTreeMap<&'static str, i64>,
    /// Frameworks in `framework_basis` that are connected.
    frameworks_connected: i64,
}

impl ViewCache {
    /// The task's summary must be rebuilt at the next publish (it was added,
    /// changed, or retired), and its agent's and framework's too.
    pub(crate) fn task_changed(&mut self, framework_id: &str, task_id: &str, agent_id: &str) {
        self.dirty_tasks
            .insert((framework_id.to_string(), task_id.to_string()));
        self.agent_changed(agent_id);
        if !self.touched_frameworks.contains(framework_id) {
            self.touched_frameworks.insert(framework_id.to_string());
        }
    }

    /// The agent's summary may have changed (its `used`).
    pub(crate) fn agent_changed(&mut self, agent_id: &str) {
        if !self.touched_agents.contains(agent_id) {
            self.touched_agents.insert(agent_id.to_string());
        }
    }

    /// Something changed that `task_changed`, `agent_changed` and the offer book do
    /// not track: the next publish compares every agent and framework.
    pub(crate) fn compare_all(&mut self) {
        self.compare_everything = true;
    }

    /// A task is about to join its framework's completed list (as its last entry).
    /// Its summary there is built at the next publish, or shared with its live one
    /// if that is current.
    pub(crate) fn task_retired(&mut self, task: &TaskEntry) {
        let task_id = task.info_task_id();
        let key = (task.framework_id.clone(), task_id);
        let current = !self.dirty_tasks.contains(&key);
        self.retired
            .entry(key.0.clone())
            .or_default()
            .push((key.1.clone(), current));
        self.task_changed(&key.0, &key.1, &task.agent_id);
    }

    /// Lists the tasks retired since the last publish in `completed`, and drops
    /// what falls off each framework's list (at most `kept`). Runs before
    /// `refresh_tasks`, while the retired tasks' live summaries are still there.
    fn refresh_completed(&mut self, frameworks: &HashMap<String, FrameworkEntry>, kept: usize) {
        for (framework_id, retired) in std::mem::take(&mut self.retired) {
            let Some(fw) = frameworks.get(&framework_id) else {
                continue;
            };
            // The last `retired.len()` entries of `completed` are these tasks, unless
            // the list was cut shorter than that.
            let listed = retired.len().min(fw.completed.len()).min(kept);
            let entries = fw.completed.iter().skip(fw.completed.len() - listed);
            let retired = &retired[retired.len() - listed..];
            for ((task_id, current), entry) in retired.iter().zip(entries) {
                if entry.framework_id != framework_id || entry.info_task_id() != *task_id {
                    // Not what `task_retired` saw: start the list over from the
                    // framework's (`reconcile_frameworks` rebuilds it, as its length
                    // now disagrees).
                    self.forget_completed(&framework_id);
                    break;
                }
                let live_key = (framework_id.clone(), task_id.clone());
                let shared = self.tasks.get(&live_key).filter(|_| *current).cloned();
                self.retirements += 1;
                let key = (framework_id.clone(), task_id.clone(), self.retirements);
                let item = match shared {
                    Some(live) => Item::sharing(key.clone(), &live),
                    None => Item::new(key.clone(), task_summary(entry)),
                };
                self.push_completed(item, kept);
            }
        }
    }

    /// Appends an item to its framework's completed list, which keeps `kept` at most.
    fn push_completed(&mut self, item: Arc<Item<CompletedKey, pb::TaskSummary>>, kept: usize) {
        let order = self.completed_order.entry(item.key.0.clone()).or_default();
        order.push_back(item.key.clone());
        while order.len() > kept {
            if let Some(oldest) = order.pop_front() {
                self.completed.remove(&oldest);
            }
        }
        self.completed.upsert(item);
    }

    /// Accounts for `old` leaving and `new` entering `tasks`.
    fn count(
        &mut self,
        framework_id: &str,
        old: Option<&pb::TaskSummary>,
        new: Option<&pb::TaskSummary>,
    ) {
        let counts = self
            .task_counts
            .entry(framework_id.to_string())
            .or_default();
        for (summary, sign) in [(old, -1i64), (new, 1)] {
            let Some(summary) = summary else { continue };
            counts.live = counts.live.saturating_add_signed(sign as isize);
            if !is_terminal_raw(summary.state) {
                counts.active = counts.active.saturating_add_signed(sign as i32);
            }
            *self.tasks_by_state.entry(summary.state).or_default() += sign;
        }
    }

    /// Rebuilds the summaries of the dirty tasks (dropping those that are gone).
    fn refresh_tasks(&mut self, frameworks: &HashMap<String, FrameworkEntry>) {
        let dirty: Vec<TaskKey> = self.dirty_tasks.drain().collect();
        for key in dirty {
            let current = frameworks
                .get(&key.0)
                .and_then(|fw| fw.tasks.get(&key.1))
                .map(task_summary);
            let framework_id = key.0.clone();
            let (old, new) = match current {
                Some(summary) => {
                    let item = Item::new(key, summary);
                    let old = self.tasks.upsert(item.clone());
                    (old, Some(item))
                }
                None => (self.tasks.remove(&key), None),
            };
            self.count(
                &framework_id,
                old.as_ref().map(|i| i.value()),
                new.as_ref().map(|i| i.value()),
            );
        }
    }

    /// Drops everything of frameworks that are gone, and resynchronises any whose
    /// tasks disagree with the cache (a change that bypassed `task_changed`).
    /// Checks the frameworks in `which`, or every one.
    fn reconcile_frameworks(
        &mut self,
        frameworks: &HashMap<String, FrameworkEntry>,
        which: Option<&HashSet<String>>,
    ) {
        if which.is_none() {
            let gone: HashSet<String> = self
                .task_counts
                .keys()
                .chain(self.completed_order.keys())
                .chain(self.framework_basis.keys())
                .filter(|id| !frameworks.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                self.forget_framework(&id);
            }
        }
        let ids: Vec<&String> = match which {
            Some(which) => which.iter().collect(),
            None => frameworks.keys().collect(),
        };
        for id in ids {
            let Some(fw) = frameworks.get(id) else {
                self.forget_framework(id);
                continue;
            };
            let live = self.task_counts.get(id).map_or(0, |c| c.live);
            if live != fw.tasks.len() {
                self.forget_tasks_of(id);
                for task_id in fw.tasks.keys() {
                    self.dirty_tasks.insert((id.clone(), task_id.clone()));
                }
                self.refresh_tasks(frameworks);
            }
            let completed = self.completed_order.get(id).map_or(0, VecDeque::len);
            if completed != fw.completed.len() {
                self.forget_completed(id);
                for task in &fw.completed {
                    self.retirements += 1;
                    let key = (
                        task.framework_id.clone(),
                        task.info_task_id(),
                        self.retirements,
                    );
                    self.push_completed(Item::new(key, task_summary(task)), usize::MAX);
                }
            }
        }
    }

    /// Drops a framework's completed list.
    fn forget_completed(&mut self, framework_id: &str) {
        if let Some(order) = self.completed_order.remove(framework_id) {
            for key in order {
                self.completed.remove(&key);
            }
        }
    }

    /// Drops the summaries of a framework that is gone, and of its tasks.
    fn forget_framework(&mut self, framework_id: &str) {
        self.forget_tasks_of(framework_id);
        self.forget_completed(framework_id);
        if let Some(basis) = self.framework_basis.remove(framework_id) {
            self.frameworks.remove(&basis.key);
            self.frameworks_connected -= i64::from(basis.connected);
        }
    }

    /// Drops every task summary of a framework.
    fn forget_tasks_of(&mut self, framework_id: &str) {
        if self
            .task_counts
            .get(framework_id)
            .is_some_and(|c| c.live > 0)
        {
            let removed = self.tasks.remove_where(|item| item.key.0 == framework_id);
            for item in removed {
                self.count(framework_id, Some(item.value()), None);
            }
        }
        self.task_counts.remove(framework_id);
    }

    /// Rebuilds the summaries of frameworks in `which` (or of all) that changed.
    fn refresh_frameworks(
        &mut self,
        frameworks: &HashMap<String, FrameworkEntry>,
        offers: &OfferBook,
        which: Option<&HashSet<String>>,
    ) {
        let ids: Vec<&String> = match which {
            Some(which) => which.iter().collect(),
            None => frameworks.keys().collect(),
        };
        for id in ids {
            let Some(fw) = frameworks.get(id) else {
                continue;
            };
            let active_tasks = self.task_counts.get(id).map_or(0, |c| c.active);
            let offered = offers.offered_to_framework(id);
            let key = (Seconds(fw.registered_time), id.clone());
            if let Some(basis) = self.framework_basis.get(id)
                && basis.key == key
                && basis.connected == fw.connection.is_some()
                && basis.used == fw.used
                && offered.map_or(basis.offered.is_empty(), |o| *o == basis.offered)
                && basis.active_tasks == active_tasks
                && basis
                    .disconnected_time
                    .total_cmp(&fw.disconnected_time)
                    .is_eq()
                && basis.item.value().framework_info.as_ref() == Some(&fw.info)
            {
                continue;
            }
            let item = Item::new(key.clone(), framework_summary(fw, offers, active_tasks));
            let basis = FrameworkBasis {
                key,
                connected: fw.connection.is_some(),
                used: fw.used.clone(),
                offered: offered.cloned().unwrap_or_default(),
                active_tasks,
                disconnected_time: fw.disconnected_time,
                item: item.clone(),
            };
            self.frameworks_connected += i64::from(basis.connected);
            if let Some(old) = self.framework_basis.insert(id.clone(), basis) {
                self.frameworks_connected -= i64::from(old.connected);
                if old.key != item.key {
                    self.frameworks.remove(&old.key);
                }
            }
            self.frameworks.upsert(item);
        }
    }

    /// Rebuilds the summaries of agents in `which` (or of all) that changed, and
    /// drops those of agents that are gone.
    fn refresh_agents(
        &mut self,
        agents: &HashMap<String, AgentEntry>,
        offers: &OfferBook,
        which: Option<&HashSet<String>>,
    ) {
        let ids: Vec<String> = match which {
            Some(which) => which.iter().cloned().collect(),
            None => agents
                .keys()
                .chain(self.agent_basis.keys())
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect(),
        };
        for id in ids {
            let Some(agent) = agents.get(&id) else {
                if let Some(basis) = self.agent_basis.remove(&id) {
                    self.agents.remove(&basis.key);
                    *self.agents_by_status.entry(basis.status).or_default() -= 1;
                }
                continue;
            };
            let status = agent_status(agent);
            let offered = offers.offered_on_agent(&id);
            if let Some(basis) = self.agent_basis.get(&id)
                && basis.status == status
                && basis.used == agent.used
                && offered.map_or(basis.offered.is_empty(), |o| *o == basis.offered)
                && basis.total == agent.total
                && basis
                    .item
                    .value()
                    .registered_time
                    .total_cmp(&agent.registered_time)
                    .is_eq()
                && basis.item.value().agent_info.as_ref() == Some(&agent.info)
            {
                continue;
            }
            let key = (agent.info.hostname.clone(), id.clone());
            let item = Item::new(key.clone(), agent_summary(agent, offers));
            let basis = AgentBasis {
                key,
                status,
                total: agent.total.clone(),
                used: agent.used.clone(),
                offered: offered.cloned().unwrap_or_default(),
                item: item.clone(),
            };
            *self.agents_by_status.entry(status).or_default() += 1;
            if let Some(old) = self.agent_basis.insert(id, basis) {
                *self.agents_by_status.entry(old.status).or_default() -= 1;
                if old.key != item.key {
                    self.agents.remove(&old.key);
                }
            }
            self.agents.upsert(item);
        }
    }
}

fn is_terminal_raw(state: i32) -> bool {
    agora_core::task_state::is_terminal_raw(state)
}

pub(crate) fn task_summary(task: &TaskEntry) -> pb::TaskSummary {
    pb::TaskSummary {
        name: task.info.name.clone(),
        task_id: task.info.task_id.clone(),
        framework_id: Some(pb::FrameworkId {
            value: task.framework_id.clone(),
        }),
        agent_id: Some(pb::AgentId {
            value: task.agent_id.clone(),
        }),
        state: task.state as i32,
        resources: task.resources.to_proto(),
        // Status data is the framework's business and can be large; views omit it.
        latest_status: task.latest_status.as_ref().map(|s| pb::TaskStatus {
            data: Vec::new(),
            ..s.clone()
        }),
    }
}

fn agent_status(agent: &AgentEntry) -> &'static str {
    if !agent.reachable {
        "UNREACHABLE"
    } else if let Some(mode) = agent.maintenance_status() {
        mode
    } else if agent.connection.is_some() {
        "ACTIVE"
    } else {
        "DISCONNECTED"
    }
}

fn agent_summary(agent: &AgentEntry, offers: &OfferBook) -> pb::AgentSummary {
    pb::AgentSummary {
        agent_info: Some(agent.info.clone()),
        status: agent_status(agent).into(),
        total: agent.total.to_proto(),
        used: agent.used.to_proto(),
        offered: offers
            .offered_on_agent(agent.id())
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        registered_time: agent.registered_time,
    }
}

fn framework_summary(
    fw: &FrameworkEntry,
    offers: &OfferBook,
    active_tasks: u32,
) -> pb::FrameworkSummary {
    pb::FrameworkSummary {
        framework_info: Some(fw.info.clone()),
        connected: fw.connection.is_some(),
        used: fw.used.to_proto(),
        offered: offers
            .offered_to_framework(fw.id())
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        active_tasks,
        registered_time: fw.registered_time,
        disconnected_time: fw.disconnected_time,
    }
}

impl MasterCore {
    /// Brings the cache up to date and publishes a snapshot of it. Costs what
    /// changed since the last publish, plus one handle per chunk; after an untracked
    /// change ([`ViewCache::compare_all`]), one comparison per agent and framework.
    pub(crate) fn publish_view(&mut self) {
        let (offered_agents, offered_frameworks) = self.offers.take_changes();
        let cache = &mut self.view_cache;
        cache.refresh_completed(&self.frameworks, super::COMPLETED_TASKS_PER_FRAMEWORK);
        cache.refresh_tasks(&self.frameworks);
        let compare_all = std::mem::take(&mut cache.compare_everything);
        let mut frameworks = std::mem::take(&mut cache.touched_frameworks);
        let mut agents = std::mem::take(&mut cache.touched_agents);
        frameworks.extend(offered_frameworks);
        agents.extend(offered_agents);
        // Draining agents become DRAINED after any batch (`progress_drains`).
        agents.extend(self.draining_agents.iter().cloned());
        let (frameworks, agents) = if compare_all {
            (None, None)
        } else {
            (Some(&frameworks), Some(&agents))
        };
        cache.reconcile_frameworks(&self.frameworks, frameworks);
        cache.refresh_frameworks(&self.frameworks, &self.offers, frameworks);
        cache.refresh_agents(&self.agents, &self.offers, agents);
        self.metrics.set_counts(&ClusterCounts {
            agents_by_status: &cache.agents_by_status,
            frameworks_connected: cache.frameworks_connected,
            frameworks_disconnected: cache.framework_basis.len() as i64
                - cache.frameworks_connected,
            tasks_by_state: &cache.tasks_by_state,
            offers_outstanding: self.offers.len() as i64,
        });
        let view = ClusterView {
            master_info: self.master_info.clone(),
            agents: cache.agents.snapshot(),
            frameworks: cache.frameworks.snapshot(),
            tasks: cache.tasks.snapshot(),
            completed: cache.completed.snapshot(),
        };
        #[cfg(debug_assertions)]
        self.check_view(&view);
        self.view.send_replace(Arc::new(view));
    }

    /// Debug builds (every test) check each published view against one built from
    /// scratch, while the cluster is small enough for that to be cheap.
    #[cfg(debug_assertions)]
    fn check_view(&self, view: &ClusterView) {
        let tasks: usize = self
            .frameworks
            .values()
            .map(|f| f.tasks.len() + f.completed.len())
            .sum();
        if tasks + self.agents.len() > 2000 {
            return;
        }
        let mut agents: Vec<(AgentKey, pb::AgentSummary)> = self
            .agents
            .iter()
            .map(|(id, a)| {
                (
                    (a.info.hostname.clone(), id.clone()),
                    agent_summary(a, &self.offers),
                )
            })
            .collect();
        agents.sort_by(|a, b| a.0.cmp(&b.0));
        let mut frameworks: Vec<(FrameworkKey, pb::FrameworkSummary)> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let active = f.tasks.values().filter(|t| !is_terminal(t.state)).count() as u32;
                (
                    (Seconds(f.registered_time), id.clone()),
                    framework_summary(f, &self.offers, active),
                )
            })
            .collect();
        frameworks.sort_by(|a, b| a.0.cmp(&b.0));
        let mut live = Vec::new();
        let mut completed = Vec::new();
        for (id, fw) in &self.frameworks {
            live.extend(
                fw.tasks
                    .iter()
                    .map(|(task_id, t)| ((id.clone(), task_id.clone()), task_summary(t))),
            );
            completed.extend(
                fw.completed
                    .iter()
                    .enumerate()
                    .map(|(n, t)| ((id.clone(), t.info_task_id(), n), task_summary(t))),
            );
        }
        live.sort_by(|a, b| a.0.cmp(&b.0));
        completed.sort_by(|a, b| a.0.cmp(&b.0));
        let got = view.state_with_group(pb::MasterGroup::default());
        fn first_difference<T: PartialEq + std::fmt::Debug>(name: &str, expected: &[T], got: &[T]) {
            if expected == got {
                return;
            }
            let at = expected
                .iter()
                .zip(got)
                .position(|(e, g)| e != g)
                .unwrap_or(expected.len().min(got.len()));
            panic!(
                "the published {name} differ from a fresh build at {at} \
                 ({} expected, {} published):\n expected {:?}\n published {:?}",
                expected.len(),
                got.len(),
                expected.get(at),
                got.get(at)
            );
        }
        fn values<K, T>(keyed: Vec<(K, T)>) -> Vec<T> {
            keyed.into_iter().map(|(_, summary)| summary).collect()
        }
        first_difference("agents", &values(agents), &got.agents);
        first_difference("frameworks", &values(frameworks), &got.frameworks);
        first_difference("tasks", &values(live), &got.tasks);
        first_difference("completed tasks", &values(completed), &got.completed_tasks);
    }

    pub(super) fn emit_task(&self, task: &TaskEntry, added: bool) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        self.emit_task_summary(task_summary(task), added);
    }

    /// Sends TASK_ADDED or TASK_UPDATED to operator subscribers.
    pub(super) fn emit_task_summary(&self, summary: pb::TaskSummary, added: bool) {
        let summary = Some(summary);
        let event = if added {
            pb::operator_event::Event::TaskAdded(pb::operator_event::TaskAdded { task: summary })
        } else {
            pb::operator_event::Event::TaskUpdated(pb::operator_event::TaskUpdated {
                task: summary,
            })
        };
        let _ = self
            .operator_events
            .send(pb::OperatorEvent { event: Some(event) });
    }

    pub(super) fn emit_framework_added(&self, framework_id: &str) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        if let Some(fw) = self.frameworks.get(framework_id) {
            let active = fw.tasks.values().filter(|t| !is_terminal(t.state)).count() as u32;
            let framework = Some(framework_summary(fw, &self.offers, active));
            let _ = self.operator_events.send(pb::OperatorEvent {
                event: Some(pb::operator_event::Event::FrameworkAdded(
                    pb::operator_event::FrameworkAdded { framework },
                )),
            });
        }
    }

    pub(super) fn emit_agent_added(&self, agent_id: &str) {
        if self.operator_events.receiver_count() == 0 {
            return;
        }
        if let Some(agent) = self.agents.get(agent_id) {
            let agent = Some(agent_summary(agent, &self.offers));
            let _ = self.operator_events.send(pb::OperatorEvent {
                event: Some(pb::operator_event::Event::AgentAdded(
                    pb::operator_event::AgentAdded { agent },
                )),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the test needs no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }
    }

    #[test]
    fn sorted_chunks_behave_like_a_sorted_map() {
        let mut chunks: SortedChunks<u64, u64> = SortedChunks::default();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut rng = Lcg(7);
        let mut snapshots = Vec::new();
        for step in 0..20_000u64 {
            let key = rng.next(3000);
            match rng.next(10) {
                0..=5 => {
                    let old = chunks.upsert(Item::new(key, step)).map(|i| *i.value());
                    assert_eq!(old, model.insert(key, step));
                }
                6..=8 => {
                    let old = chunks.remove(&key).map(|i| *i.value());
                    assert_eq!(old, model.remove(&key));
                }
                _ => {
                    let removed = chunks.remove_where(|i| i.key % 97 == key % 97);
                    let expected: Vec<u64> = model
                        .keys()
                        .filter(|k| *k % 97 == key % 97)
                        .copied()
                        .collect();
                    let mut got: Vec<u64> = removed.iter().map(|i| i.key).collect();
                    got.sort();
                    assert_eq!(got, expected);
                    model.retain(|k, _| k % 97 != key % 97);
                }
            }
            if step % 500 == 0 {
                chunks.check();
                assert_eq!(chunks.keys(), model.keys().copied().collect::<Vec<_>>());
                assert_eq!(
                    chunks.get(&key).map(|i| *i.value()),
                    model.get(&key).copied()
                );
                // A snapshot keeps what it saw, whatever changes later.
                let expected: Vec<u64> = model.values().copied().collect();
                snapshots.push((chunks.snapshot(), expected));
            }
        }
        chunks.check();
        for (snapshot, expected) in snapshots {
            let seen: Vec<u64> = snapshot
                .iter()
                .flat_map(|c| c.items.iter().map(|i| *i.value()))
                .collect();
            assert_eq!(seen, expected);
        }
        // Emptied, it holds no chunk.
        let keys: Vec<u64> = model.keys().copied().collect();
        for key in keys {
            assert!(chunks.remove(&key).is_some());
        }
        assert_eq!(chunks.len(), 0);
        assert!(chunks.snapshot().is_empty());
    }

    #[test]
    fn chunk_json_follows_changes() {
        let mut chunks: SortedChunks<u64, u64> = SortedChunks::default();
        for k in 0..3 {
            chunks.upsert(Item::new(k, k * 10));
        }
        let before = chunks.snapshot();
        assert_eq!(&before[0].json()[..], b"0,10,20");
        chunks.upsert(Item::new(1, 11));
        assert_eq!(&chunks.snapshot()[0].json()[..], b"0,11,20");
        // The earlier snapshot is unchanged, rendering included.
        assert_eq!(&before[0].json()[..], b"0,10,20");
    }

    fn task(framework: &str, id: &str, state: pb::TaskState) -> pb::TaskSummary {
        pb::TaskSummary {
            name: id.into(),
            task_id: Some(pb::TaskId { value: id.into() }),
            framework_id: Some(pb::FrameworkId {
                value: framework.into(),
            }),
            state: state as i32,
            resources: Resources::parse("cpus:0.5;mem:32").unwrap().to_proto(),
            latest_status: Some(pb::TaskStatus {
                uuid: vec![1; 16],
                message: "quote \" and unicode é".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_json_is_what_serde_makes_of_the_message() {
        let mut tasks = SortedChunks::default();
        for n in 0..(CHUNK_MAX * 2 + 3) {
            let id = format!("t-{n}");
            tasks.upsert(Item::new(
                ("f1".to_string(), id.clone()),
                task("f1", &id, pb::TaskState::TaskRunning),
            ));
        }
        let mut agents = SortedChunks::default();
        agents.upsert(Item::new(
            ("host".to_string(), "a1".to_string()),
            pb::AgentSummary {
                status: "ACTIVE".into(),
                registered_time: 1.5,
                ..Default::default()
            },
        ));
        let view = ClusterView {
            master_info: pb::MasterInfo {
                id: "m".into(),
                ..Default::default()
            },
            agents: agents.snapshot(),
            frameworks: Vec::new(),
            tasks: tasks.snapshot(),
            completed: Vec::new(),
        };
        let group = pb::MasterGroup::default();
        let expected = serde_json::to_vec(&view.state_with_group(group.clone())).unwrap();
        let got: Vec<u8> = view
            .json_parts(&group)
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(
            view.state_with_group(group.clone()).tasks.len(),
            CHUNK_MAX * 2 + 3
        );
        let empty = ClusterView::empty(pb::MasterInfo::default());
        let expected = serde_json::to_vec(&empty.state_with_group(group.clone())).unwrap();
        let got: Vec<u8> = empty
            .json_parts(&group)
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        assert_eq!(got, expected);
    }
}
