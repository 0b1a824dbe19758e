//! The `StateStore` service: frameworks' replicated key-value store and leases.
//!
//! Reads run on a linearizable view of the replicated state (raft read index), so
//! they fail with "not the leader" on a follower. Writes are checked, proposed to the
//! raft log and answered with what applying them produced, once a majority has
//! committed them. Every refusal keeps the reason the store gave.
//!
//! Outcomes that are not refusals travel in the result, not as a status: a
//! compare-and-set that lost (`succeeded` false, with `current`), a batch whose
//! compare-and-set lost (`conflict_key`), and a write whose fence no longer held
//! (`fenced`, with the lease as it is). Each changed nothing.
//!
//! A client must know whether a failed write may still have been applied: that
//! decides whether it may retry. Failures that happen before anything is proposed
//! (invalid, not the leader) leave nothing behind; those after the proposal
//! (leadership lost, timed out, the node stopped) are marked with
//! [`WRITE_OUTCOME_METADATA_KEY`] = [`WRITE_OUTCOME_UNKNOWN`].

use agora_proto as pb;
use tonic::{Request, Response, Status};

use crate::replication::ReplicaError;
use crate::replication::ReplicaHandle;
use crate::replication::state_store::StateStore;

/// gRPC metadata set on a write's failure when the write may or may not have been
/// applied. The SDK's state-store client reads it (under the same name).
pub const WRITE_OUTCOME_METADATA_KEY: &str = "agora-write-outcome";
/// The value of [`WRITE_OUTCOME_METADATA_KEY`]: the outcome is unknown.
pub const WRITE_OUTCOME_UNKNOWN: &str = "unknown";

pub struct StateStoreApi {
    /// The local raft node: reads and proposals go through it, and it refuses both
    /// (with the leader's address) when this master does not lead.
    pub(crate) replica: ReplicaHandle,
}

#[tonic::async_trait]
impl pb::state_store_server::StateStore for StateStoreApi {
    async fn get(
        &self,
        request: Request<pb::StoreGetRequest>,
    ) -> Result<Response<pb::StoreGetResponse>, Status> {
        let request = request.into_inner();
        let entry = self
            .replica
            .read(move |state| state.store.get(&request.namespace, &request.key))
            .await?;
        Ok(Response::new(pb::StoreGetResponse { entry }))
    }

    async fn list(
        &self,
        request: Request<pb::StoreListRequest>,
    ) -> Result<Response<pb::StoreListResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .replica
            .read(move |state| state.store.list(&request))
            .await?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(page))
    }

    async fn get_lease(
        &self,
        request: Request<pb::StoreGetLeaseRequest>,
    ) -> Result<Response<pb::StoreGetLeaseResponse>, Status> {
        let request = request.into_inner();
        // The clock is read inside the read, after the read index confirmed this
        // master still leads: a lease is judged at a time when this master's view of
        // it is current.
        let lease = self
            .replica
            .read(move |state| {
                state.store.lease(
                    &request.namespace,
                    &request.name,
                    agora_core::time::now_secs(),
                )
            })
            .await?;
        Ok(Response::new(pb::StoreGetLeaseResponse { lease }))
    }

    async fn write(
        &self,
        request: Request<pb::StateStoreWrite>,
    ) -> Result<Response<pb::StateStoreWriteResult>, Status> {
        let write = request.into_inner();
        StateStore::validate_write(&write).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A node that has stopped would fail the proposal in a way that looks like a
        // lost outcome; refusing here says plainly that nothing was written.
        let stopped = self.replica.leadership().borrow().stopped.clone();
        if let Some(reason) = stopped {
            return Err(ReplicaError::Stopped(reason).into());
        }
        let applied = self
            .replica
            .propose(pb::replicated_command::Command::StateStore(write))
            .await
            .map_err(write_failed)?;
        write_result(applied).map(Response::new)
    }
}

/// A proposal's failure as a status, marked when the write may have been applied.
fn write_failed(error: ReplicaError) -> Status {
    let outcome_unknown = matches!(
        error,
        ReplicaError::LeadershipLost | ReplicaError::Timeout(_) | ReplicaError::Stopped(_)
    );
    let mut status = Status::from(error);
    if outcome_unknown && let Ok(value) = WRITE_OUTCOME_UNKNOWN.parse() {
        status
            .metadata_mut()
            .insert(WRITE_OUTCOME_METADATA_KEY, value);
    }
    status
}

/// What applying the write produced, as the answer to the client.
fn write_result(applied: pb::CommandResult) -> Result<pb::StateStoreWriteResult, Status> {
    use pb::command_result::Result as Applied;
    match applied.result {
        Some(Applied::StateStore(result)) if result.error.is_empty() => Ok(result),
        Some(Applied::StateStore(result)) => Err(store_refusal(result.error)),
        Some(Applied::Rejected(reason)) => Err(Status::invalid_argument(reason)),
        Some(Applied::Registry(_)) | None => Err(Status::internal(
            "the replicated log applied the write but returned no state-store result",
        )),
    }
}

/// The status for a write the store refused when applying it. Shape checks have
/// passed by then ([`StateStore::validate_write`]), so what is left depends on the
/// namespace's contents: a full namespace is RESOURCE_EXHAUSTED, anything else is
/// FAILED_PRECONDITION. The store reports only a message, so its wording decides;
/// the tests below hold this to the store's actual refusals.
fn store_refusal(message: String) -> Status {
    const QUOTA_WORDS: &[&str] = &["limit", "already holds", "quota", "too many", "full"];
    let lowercase = message.to_lowercase();
    if QUOTA_WORDS.iter().any(|word| lowercase.contains(word)) {
        Status::resource_exhausted(message)
    } else {
        Status::failed_precondition(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(result: pb::command_result::Result) -> pb::CommandResult {
        pb::CommandResult {
            result: Some(result),
        }
    }

    #[test]
    fn store_results_pass_through_and_refusals_keep_their_message() {
        let ok = pb::StateStoreWriteResult {
            succeeded: true,
            ..Default::default()
        };
        let result = write_result(applied(pb::command_result::Result::StateStore(ok.clone())));
        assert_eq!(result.ok(), Some(ok));

        let full = pb::StateStoreWriteResult {
            error: "namespace 'apps' is over its limit of 100000 keys".into(),
            ..Default::default()
        };
        let status = write_result(applied(pb::command_result::Result::StateStore(full)))
            .err()
            .map(|s| (s.code(), s.message().to_string()));
        assert_eq!(
            status,
            Some((
                tonic::Code::ResourceExhausted,
                "namespace 'apps' is over its limit of 100000 keys".into()
            ))
        );

        let rejected = write_result(applied(pb::command_result::Result::Rejected(
            "undecodable".into(),
        )))
        .err()
        .map(|s| s.code());
        assert_eq!(rejected, Some(tonic::Code::InvalidArgument));

        let empty = write_result(pb::CommandResult::default())
            .err()
            .map(|s| s.code());
        assert_eq!(empty, Some(tonic::Code::Internal));
    }

    /// Applies `write` at successive indexes until the store refuses one.
    fn first_refusal(mut write: impl FnMut(u64) -> pb::StateStoreWrite) -> String {
        let mut store = StateStore::default();
        for index in 1..=200_000 {
            let result = store.apply_write(index, 1_000.0, &write(index));
            if !result.error.is_empty() {
                return result.error;
            }
        }
        panic!("the store never refused a write");
    }

    #[test]
    fn a_full_namespace_is_resource_exhausted_in_the_stores_own_words() {
        use pb::state_store_write::{AcquireLease, Op, Put};
        let too_many_keys = first_refusal(|i| pb::StateStoreWrite {
            namespace: "apps".into(),
            op: Some(Op::Put(Put {
                key: format!("k{i}"),
                value: Vec::new(),
            })),
            fence: None,
        });
        let too_many_leases = first_refusal(|i| pb::StateStoreWrite {
            namespace: "apps".into(),
            op: Some(Op::AcquireLease(AcquireLease {
                name: format!("lease{i}"),
                holder: "a".into(),
                ttl_seconds: 60.0,
            })),
            fence: None,
        });
        let too_many_bytes = first_refusal(|i| pb::StateStoreWrite {
            namespace: "apps".into(),
            op: Some(Op::Put(Put {
                key: format!("k{i}"),
                value: vec![0; agora_core::limits::MAX_STORE_VALUE_BYTES],
            })),
            fence: None,
        });
        let too_many_keys_in_a_batch = first_refusal(|i| pb::StateStoreWrite {
            namespace: "apps".into(),
            op: Some(Op::Batch(pb::state_store_write::Batch {
                ops: (0..agora_core::limits::MAX_STORE_BATCH_OPS)
                    .map(|j| pb::state_store_write::BatchOp {
                        op: Some(pb::state_store_write::batch_op::Op::Put(Put {
                            key: format!("k{i}.{j}"),
                            value: Vec::new(),
                        })),
                    })
                    .collect(),
            })),
            fence: None,
        });
        for message in [
            too_many_keys,
            too_many_leases,
            too_many_bytes,
            too_many_keys_in_a_batch,
        ] {
            let status = store_refusal(message.clone());
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{message}");
            assert_eq!(status.message(), message);
        }
        assert_eq!(
            store_refusal("write at index 3 is not after the key's version 4".into()).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn only_failures_after_the_proposal_are_marked_unknown() {
        let marked = |error: ReplicaError| {
            write_failed(error)
                .metadata()
                .get(WRITE_OUTCOME_METADATA_KEY)
                .is_some()
        };
        assert!(marked(ReplicaError::LeadershipLost));
        assert!(marked(ReplicaError::Timeout(
            std::time::Duration::from_secs(5)
        )));
        assert!(marked(ReplicaError::Stopped("disk failed".into())));
        assert!(!marked(ReplicaError::NotLeader {
            leader_address: Some("10.0.0.2:5050".into())
        }));
        assert!(!marked(ReplicaError::NotReady));
        assert!(!marked(ReplicaError::Invalid("bad".into())));

        let redirect = write_failed(ReplicaError::NotLeader {
            leader_address: Some("10.0.0.2:5050".into()),
        });
        assert_eq!(redirect.code(), tonic::Code::Unavailable);
        assert_eq!(
            redirect
                .metadata()
                .get(crate::LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.2:5050")
        );
    }
}
