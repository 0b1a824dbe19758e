//! Replication: the masters form a raft group (raft-rs) that replicates the registry
//! and the frameworks' state store.
//!
//! # Layout
//! - [`storage`]: [`storage::DiskStorage`], the durable raft log, hard state and
//!   snapshots (checksummed files, fsync before anything is acknowledged).
//! - [`node`]: the task that owns the `RawNode`: it ticks, steps incoming messages,
//!   proposes, and runs the ready loop in raft-rs' order; committed entries are applied
//!   in one named place ([`node`]'s `apply_committed`).
//! - [`state_machine`]: [`state_machine::ReplicatedState`], what committed entries
//!   build: the registry, the state store and the member addresses. Pure and
//!   deterministic: every replica applying the same log holds the same state.
//! - [`state_store`]: the per-namespace key-value store with versions, compare-and-set,
//!   prefix listing and leases.
//! - [`replicated_registry`]: the master core's `Registry`, as raft proposals.
//! - [`transport`]: how raft messages reach peers: the [`transport::Transport`] trait,
//!   the gRPC `RaftPeer` client and service, and an in-memory network that tests can
//!   partition.
//!
//! A single master is a group of one: the same code path, with a majority of one.

pub mod node;
pub mod replicated_registry;
pub mod state_machine;
pub mod state_store;
pub mod storage;
pub mod transport;

pub use node::{
    Leadership, MemberChange, RaftTimings, Replica, ReplicaConfig, ReplicaError, ReplicaHandle,
    ReplicaStartError,
};
pub use replicated_registry::ReplicatedRegistry;
pub use state_machine::ReplicatedState;
