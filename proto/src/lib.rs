//! Agora's wire protocol: generated tonic/prost code for `proto/agora/v1/*.proto`.
//!
//! # Layout
//! - `proto/agora/v1/common.proto`: ids, resources, tasks, statuses, offers, operations.
//! - `proto/agora/v1/scheduler.proto`: the framework API (`Scheduler` service).
//! - `proto/agora/v1/agent.proto`: the agent ↔ master stream (`AgentLink` service).
//! - `proto/agora/v1/executor.proto`: the executor ↔ agent API (`ExecutorApi` service).
//! - `proto/agora/v1/operator.proto`: the operator API (`Operator` service).
//! - [`serde_names`]: renders enum fields by name when a message is serialized to JSON.
//!
//! Validation (sizes, counts, numeric ranges) is not here: see `agora_core::limits`.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("agora.v1");
}

pub mod serde_names;

pub use v1::*;
