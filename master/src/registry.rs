//! The registry: what the master must not forget across restarts and failovers.
//!
//! It records admitted, unreachable and gone agents, and frameworks with their info and
//! when they disconnected (so a failover timeout keeps running across a master
//! restart), plus the allocator's durable inputs: role weights, quotas, dynamic
//! reservations and agents under maintenance. Everything else (offers, the task map,
//! connections) is soft state that agents and frameworks rebuild when they re-register.
//!
//! [`Registry`] is the seam for replication: [`LocalRegistry`] keeps one checksummed
//! file on this master's disk; the replicated implementation commits the same
//! [`RegistryOp`]s through Raft (as [`pb::RegistryCommand`]s, see
//! [`RegistryOp::to_command`]) before acknowledging them.
//!
//! Applying a command ([`RegistryState::apply_command`]) is a pure function of the
//! state, the command and the time stamped on the raft entry, so every replica that
//! applies the same log holds the same registry. A command that breaks a limit is
//! refused whole and changes nothing, on every replica alike.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use agora_core::ids::id_str;
use agora_core::limits::{self, LimitError};
use agora_proto as pb;
use pb::registry_command::Op as CommandOp;
use prost::Message;

/// A boxed future, so `Registry` can be used as a trait object.
pub type RegistryFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RegistryError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "registry file {path} is corrupt ({reason}); refusing to start rather than serve wrong data. \
         Move it aside to start with an empty registry"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// The op broke a limit or a validity rule; the registry is unchanged.
    #[error("registry write refused: {0}")]
    Rejected(String),
    /// The replicated registry could not read or commit (no leader, leadership lost
    /// before the write committed, the replica stopped).
    #[error("registry replication: {0}")]
    Replication(String),
}

/// Where an agent stands in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum AgentStanding {
    Admitted = 0,
    Unreachable = 1,
    Gone = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisteredAgent {
    /// Always carries its id; at most one record per agent id.
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::AgentInfo>,
    #[prost(enumeration = "AgentStanding", tag = "2")]
    pub standing: i32,
    /// Seconds since the epoch when the standing last changed (the raft entry's time).
    #[prost(double, tag = "3")]
    pub since: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisteredFramework {
    /// Always carries its id; at most one record per framework id.
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::FrameworkInfo>,
    #[prost(double, tag = "2")]
    pub registered_time: f64,
    /// Seconds since the epoch when it disconnected; 0 while connected.
    #[prost(double, tag = "3")]
    pub disconnected_time: f64,
}

/// A framework removed for good (torn down, or its failover timeout expired): its id
/// is never accepted again, and late updates for it are acknowledged.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovedFramework {
    #[prost(string, tag = "1")]
    pub framework_id: String,
    #[prost(double, tag = "2")]
    pub removed_time: f64,
}

/// How many removed framework ids the registry remembers (oldest forgotten first).
pub const REMOVED_FRAMEWORKS_KEPT: usize = 1000;

/// Everything the registry holds. The maps are `BTreeMap`s so that two replicas with
/// the same content also encode to the same bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegistryState {
    #[prost(message, repeated, tag = "1")]
    pub agents: Vec<RegisteredAgent>,
    /// At most `limits::MAX_FRAMEWORKS`.
    #[prost(message, repeated, tag = "2")]
    pub frameworks: Vec<RegisteredFramework>,
    /// Oldest first, at most `REMOVED_FRAMEWORKS_KEPT`, each id once.
    #[prost(message, repeated, tag = "3")]
    pub removed_frameworks: Vec<RemovedFramework>,
    /// Role -> weight, only for weights other than the default 1.0; every weight passes
    /// `limits::role_weight`; at most `limits::MAX_WEIGHTED_ROLES` roles.
    #[prost(btree_map = "string, double", tag = "4")]
    pub weights: BTreeMap<String, f64>,
    /// Role -> its quota (keyed by the record's own `role`); at most
    /// `limits::MAX_QUOTAS`.
    #[prost(btree_map = "string, message", tag = "5")]
    pub quotas: BTreeMap<String, pb::QuotaRecord>,
    /// Reservation id -> the reservation (keyed by its own `reservation_id`); at most
    /// `limits::MAX_RESERVATIONS`.
    #[prost(btree_map = "string, message", tag = "6")]
    pub reservations: BTreeMap<String, pb::ReservationRecord>,
    /// Agent id -> its maintenance (keyed by its own `agent_id`); `since` is when the
    /// agent entered its current mode; at most `limits::MAX_MAINTENANCE_RECORDS`.
    #[prost(btree_map = "string, message", tag = "7")]
    pub maintenance: BTreeMap<String, pb::MaintenanceRecord>,
}

/// One change to the registry. Ops are idempotent so a replay is harmless.
///
/// The times some ops carry are used by [`RegistryState::apply`] (the single-master
/// path); the replicated path stamps every command with its raft entry's time instead,
/// so [`RegistryOp::to_command`] does not carry them.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryOp {
    /// Admits (or re-admits, updating its info) an agent.
    AdmitAgent(pb::AgentInfo),
    MarkAgentUnreachable {
        agent_id: String,
        time: f64,
    },
    MarkAgentGone {
        agent_id: String,
        time: f64,
    },
    /// Adds a framework or replaces its info; clears its disconnected time.
    PutFramework {
        info: pb::FrameworkInfo,
        time: f64,
    },
    FrameworkDisconnected {
        framework_id: String,
        time: f64,
    },
    RemoveFramework {
        framework_id: String,
        time: f64,
    },
    /// Sets a role's weight; 1.0 (the default) removes the record.
    SetWeight {
        role: String,
        weight: f64,
    },
    /// Sets (or replaces) the quota of `quota.role`.
    SetQuota(pb::QuotaRecord),
    RemoveQuota {
        role: String,
    },
    /// Records (or replaces) a dynamic reservation.
    PutReservation(pb::ReservationRecord),
    RemoveReservation {
        reservation_id: String,
    },
    /// Puts an agent into (or moves it between) DRAINING and DRAINED.
    SetMaintenance(pb::MaintenanceRecord),
    ClearMaintenance {
        agent_id: String,
    },
}

impl RegistryOp {
    /// The time this op carries, if any.
    pub fn time(&self) -> Option<f64> {
        match self {
            RegistryOp::MarkAgentUnreachable { time, .. }
            | RegistryOp::MarkAgentGone { time, .. }
            | RegistryOp::PutFramework { time, .. }
            | RegistryOp::FrameworkDisconnected { time, .. }
            | RegistryOp::RemoveFramework { time, .. } => Some(*time),
            RegistryOp::AdmitAgent(_)
            | RegistryOp::SetWeight { .. }
            | RegistryOp::SetQuota(_)
            | RegistryOp::RemoveQuota { .. }
            | RegistryOp::PutReservation(_)
            | RegistryOp::RemoveReservation { .. }
            | RegistryOp::SetMaintenance(_)
            | RegistryOp::ClearMaintenance { .. } => None,
        }
    }

    /// The command the raft log carries for this op.
    pub fn to_command(&self) -> pb::RegistryCommand {
        use pb::registry_command as rc;
        let op = match self {
            RegistryOp::AdmitAgent(info) => CommandOp::AdmitAgent(rc::AdmitAgent {
                info: Some(info.clone()),
            }),
            RegistryOp::MarkAgentUnreachable { agent_id, .. } => {
                CommandOp::MarkAgentUnreachable(rc::MarkAgentUnreachable {
                    agent_id: agent_id.clone(),
                })
            }
            RegistryOp::MarkAgentGone { agent_id, .. } => {
                CommandOp::MarkAgentGone(rc::MarkAgentGone {
                    agent_id: agent_id.clone(),
                })
            }
            RegistryOp::PutFramework { info, .. } => CommandOp::PutFramework(rc::PutFramework {
                info: Some(info.clone()),
            }),
            RegistryOp::FrameworkDisconnected { framework_id, .. } => {
                CommandOp::FrameworkDisconnected(rc::FrameworkDisconnected {
                    framework_id: framework_id.clone(),
                })
            }
            RegistryOp::RemoveFramework { framework_id, .. } => {
                CommandOp::RemoveFramework(rc::RemoveFramework {
                    framework_id: framework_id.clone(),
                })
            }
            RegistryOp::SetWeight { role, weight } => CommandOp::SetWeight(rc::SetWeight {
                role: role.clone(),
                weight: *weight,
            }),
            RegistryOp::SetQuota(quota) => CommandOp::SetQuota(rc::SetQuota {
                quota: Some(quota.clone()),
            }),
            RegistryOp::RemoveQuota { role } => {
                CommandOp::RemoveQuota(rc::RemoveQuota { role: role.clone() })
            }
            RegistryOp::PutReservation(reservation) => {
                CommandOp::PutReservation(rc::PutReservation {
                    reservation: Some(reservation.clone()),
                })
            }
            RegistryOp::RemoveReservation { reservation_id } => {
                CommandOp::RemoveReservation(rc::RemoveReservation {
                    reservation_id: reservation_id.clone(),
                })
            }
            RegistryOp::SetMaintenance(maintenance) => {
                CommandOp::SetMaintenance(rc::SetMaintenance {
                    maintenance: Some(maintenance.clone()),
                })
            }
            RegistryOp::ClearMaintenance { agent_id } => {
                CommandOp::ClearMaintenance(rc::ClearMaintenance {
                    agent_id: agent_id.clone(),
                })
            }
        };
        pb::RegistryCommand { op: Some(op) }
    }
}

fn agent_id_of(info: &pb::AgentInfo) -> &str {
    id_str(&info.id)
}

fn framework_id_of(info: &pb::FrameworkInfo) -> &str {
    id_str(&info.id)
}

/// Refusals travel as strings: they end up in `CommandResult.rejected`.
fn refused(e: LimitError) -> String {
    e.to_string()
}

/// Checks that `len` records leave room for one more when `is_new`.
fn room_for(what: &str, is_new: bool, len: usize, max: usize) -> Result<(), String> {
    if is_new && len >= max {
        return Err(format!(
            "the registry already holds {max} {what}; remove some first"
        ));
    }
    Ok(())
}

impl RegistryState {
    /// Applies an op with the time it carries, or this master's clock for ops that
    /// carry none. Only for the single-master [`LocalRegistry`]: the replicated path
    /// uses [`RegistryState::apply_command`] with the raft entry's time.
    pub fn apply(&mut self, op: &RegistryOp) -> Result<(), String> {
        let time = op.time().unwrap_or_else(agora_core::time::now_secs);
        self.apply_command(&op.to_command(), time)
    }

    /// Applies one command at `time` (seconds since the epoch, from the raft entry).
    /// Deterministic; a refused command (`Err`, with the reason) changes nothing.
    pub fn apply_command(&mut self, cmd: &pb::RegistryCommand, time: f64) -> Result<(), String> {
        if !(time.is_finite() && time >= 0.0) {
            return Err(format!(
                "the command's time {time} is not seconds since the epoch"
            ));
        }
        let op = cmd
            .op
            .as_ref()
            .ok_or("the registry command carries no operation")?;
        match op {
            CommandOp::AdmitAgent(admit) => {
                let info = admit.info.as_ref().ok_or("admit_agent needs info")?;
                limits::agent_info(info).map_err(refused)?;
                limits::id(
                    "admit_agent.info.id",
                    info.id.as_ref().map(|id| id.value.as_str()),
                )
                .map_err(refused)?;
                let id = agent_id_of(info);
                match self
                    .agents
                    .iter_mut()
                    .find(|a| a.info.as_ref().map(agent_id_of) == Some(id))
                {
                    Some(existing) => {
                        if existing.standing != AgentStanding::Admitted as i32 {
                            existing.standing = AgentStanding::Admitted as i32;
                            existing.since = time;
                        }
                        existing.info = Some(info.clone());
                    }
                    None => self.agents.push(RegisteredAgent {
                        info: Some(info.clone()),
                        standing: AgentStanding::Admitted as i32,
                        since: time,
                    }),
                }
            }
            CommandOp::MarkAgentUnreachable(mark) => {
                limits::id("mark_agent_unreachable.agent_id", Some(&mark.agent_id))
                    .map_err(refused)?;
                self.set_standing(&mark.agent_id, AgentStanding::Unreachable, time);
            }
            CommandOp::MarkAgentGone(mark) => {
                limits::id("mark_agent_gone.agent_id", Some(&mark.agent_id)).map_err(refused)?;
                self.set_standing(&mark.agent_id, AgentStanding::Gone, time);
            }
            CommandOp::PutFramework(put) => {
                let info = put.info.as_ref().ok_or("put_framework needs info")?;
                limits::framework_info(info).map_err(refused)?;
                limits::id(
                    "put_framework.info.id",
                    info.id.as_ref().map(|id| id.value.as_str()),
                )
                .map_err(refused)?;
                let id = framework_id_of(info);
                match self
                    .frameworks
                    .iter_mut()
                    .find(|f| f.info.as_ref().map(framework_id_of) == Some(id))
                {
                    Some(existing) => {
                        existing.info = Some(info.clone());
                        existing.disconnected_time = 0.0;
                    }
                    None => {
                        room_for(
                            "frameworks",
                            true,
                            self.frameworks.len(),
                            limits::MAX_FRAMEWORKS,
                        )?;
                        self.frameworks.push(RegisteredFramework {
                            info: Some(info.clone()),
                            registered_time: time,
                            disconnected_time: 0.0,
                        });
                    }
                }
            }
            CommandOp::FrameworkDisconnected(disconnected) => {
                let framework_id = &disconnected.framework_id;
                limits::id("framework_disconnected.framework_id", Some(framework_id))
                    .map_err(refused)?;
                if let Some(f) = self
                    .frameworks
                    .iter_mut()
                    .find(|f| f.info.as_ref().map(framework_id_of) == Some(framework_id))
                {
                    f.disconnected_time = time;
                }
            }
            CommandOp::RemoveFramework(remove) => {
                let framework_id = &remove.framework_id;
                limits::id("remove_framework.framework_id", Some(framework_id)).map_err(refused)?;
                self.frameworks
                    .retain(|f| f.info.as_ref().map(framework_id_of) != Some(framework_id));
                // A replayed removal keeps the first record rather than a duplicate.
                if !self
                    .removed_frameworks
                    .iter()
                    .any(|r| &r.framework_id == framework_id)
                {
                    self.removed_frameworks.push(RemovedFramework {
                        framework_id: framework_id.clone(),
                        removed_time: time,
                    });
                }
                let excess = self
                    .removed_frameworks
                    .len()
                    .saturating_sub(REMOVED_FRAMEWORKS_KEPT);
                self.removed_frameworks.drain(..excess);
            }
            CommandOp::SetWeight(set) => {
                limits::role_name("set_weight.role", &set.role).map_err(refused)?;
                limits::role_weight("set_weight.weight", set.weight).map_err(refused)?;
                if set.weight == 1.0 {
                    self.weights.remove(&set.role);
                } else {
                    room_for(
                        "role weights",
                        !self.weights.contains_key(&set.role),
                        self.weights.len(),
                        limits::MAX_WEIGHTED_ROLES,
                    )?;
                    self.weights.insert(set.role.clone(), set.weight);
                }
            }
            CommandOp::SetQuota(set) => {
                let quota = set.quota.as_ref().ok_or("set_quota needs a quota")?;
                limits::quota_record(quota).map_err(refused)?;
                room_for(
                    "quotas",
                    !self.quotas.contains_key(&quota.role),
                    self.quotas.len(),
                    limits::MAX_QUOTAS,
                )?;
                self.quotas.insert(quota.role.clone(), quota.clone());
            }
            CommandOp::RemoveQuota(remove) => {
                limits::role_name("remove_quota.role", &remove.role).map_err(refused)?;
                self.quotas.remove(&remove.role);
            }
            CommandOp::PutReservation(put) => {
                let reservation = put
                    .reservation
                    .as_ref()
                    .ok_or("put_reservation needs a reservation")?;
                limits::reservation_record(reservation).map_err(refused)?;
                room_for(
                    "reservations",
                    !self.reservations.contains_key(&reservation.reservation_id),
                    self.reservations.len(),
                    limits::MAX_RESERVATIONS,
                )?;
                self.reservations
                    .insert(reservation.reservation_id.clone(), reservation.clone());
            }
            CommandOp::RemoveReservation(remove) => {
                limits::id(
                    "remove_reservation.reservation_id",
                    Some(&remove.reservation_id),
                )
                .map_err(refused)?;
                self.reservations.remove(&remove.reservation_id);
            }
            CommandOp::SetMaintenance(set) => {
                let maintenance = set
                    .maintenance
                    .as_ref()
                    .ok_or("set_maintenance needs a maintenance record")?;
                limits::maintenance_record(maintenance).map_err(refused)?;
                let existing = self.maintenance.get(&maintenance.agent_id);
                room_for(
                    "maintenance records",
                    existing.is_none(),
                    self.maintenance.len(),
                    limits::MAX_MAINTENANCE_RECORDS,
                )?;
                // `since` is when the agent entered this mode: kept across a change of
                // deadline, restarted by a change of mode.
                let since = match existing {
                    Some(previous) if previous.mode == maintenance.mode => previous.since,
                    _ => time,
                };
                self.maintenance.insert(
                    maintenance.agent_id.clone(),
                    pb::MaintenanceRecord {
                        since,
                        ..maintenance.clone()
                    },
                );
            }
            CommandOp::ClearMaintenance(clear) => {
                limits::id("clear_maintenance.agent_id", Some(&clear.agent_id)).map_err(refused)?;
                self.maintenance.remove(&clear.agent_id);
            }
        }
        Ok(())
    }

    fn set_standing(&mut self, agent_id: &str, standing: AgentStanding, time: f64) {
        if let Some(a) = self
            .agents
            .iter_mut()
            .find(|a| a.info.as_ref().map(agent_id_of) == Some(agent_id))
            && a.standing != standing as i32
        {
            a.standing = standing as i32;
            a.since = time;
        }
    }

    pub fn agent(&self, agent_id: &str) -> Option<&RegisteredAgent> {
        self.agents
            .iter()
            .find(|a| a.info.as_ref().map(agent_id_of) == Some(agent_id))
    }

    pub fn framework(&self, framework_id: &str) -> Option<&RegisteredFramework> {
        self.frameworks
            .iter()
            .find(|f| f.info.as_ref().map(framework_id_of) == Some(framework_id))
    }
}

/// The durable record of agents and frameworks.
pub trait Registry: Send + Sync + 'static {
    /// The state as of the last acknowledged op.
    fn load(&self) -> RegistryFuture<'_, RegistryState>;
    /// Applies an op durably; returns only once it would survive a crash.
    fn apply(&self, op: RegistryOp) -> RegistryFuture<'_, ()>;
}

/// File header: magic, format version, payload length, CRC-32 of the payload.
const MAGIC: &[u8; 4] = b"AGRG";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 4 + 4 + 8 + 4;

/// A single-node registry: the whole state in one checksummed file, replaced
/// atomically (write to a temporary file, fsync, rename, fsync the directory).
pub struct LocalRegistry {
    /// The registry file; its parent directory exists.
    path: PathBuf,
    /// The state as last written. The lock is held across a write (which runs on the
    /// blocking pool), so writes land in order.
    state: tokio::sync::Mutex<RegistryState>,
}

impl LocalRegistry {
    /// Opens (or creates) `dir/registry.bin`. A corrupt file is an error, not a reset.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("registry.bin");
        let state = match std::fs::read(&path) {
            Ok(bytes) => decode_file(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryState::default(),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        Ok(Self {
            path,
            state: tokio::sync::Mutex::new(state),
        })
    }
}

/// Replaces the file at `path` with `state`: write a temporary file, fsync, rename,
/// fsync the directory.
fn write_file(path: &Path, state: &RegistryState) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let payload = state.encode_to_vec();
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn decode_file(path: &Path, bytes: &[u8]) -> Result<RegistryState, RegistryError> {
    let corrupt = |reason: &str| RegistryError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    if &bytes[0..4] != MAGIC {
        return Err(corrupt("not an Agora registry file"));
    }
    let word = |range: std::ops::Range<usize>| -> [u8; 4] {
        let mut out = [0u8; 4];
        out.copy_from_slice(&bytes[range]);
        out
    };
    let version = u32::from_le_bytes(word(4..8));
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!("unknown format version {version}")));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes(word(16..20));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(corrupt("truncated"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    RegistryState::decode(payload).map_err(|e| corrupt(&e.to_string()))
}

impl Registry for LocalRegistry {
    fn load(&self) -> RegistryFuture<'_, RegistryState> {
        Box::pin(async move { Ok(self.state.lock().await.clone()) })
    }

    fn apply(&self, op: RegistryOp) -> RegistryFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let mut next = state.clone();
            next.apply(&op).map_err(RegistryError::Rejected)?;
            let (path, written) = (self.path.clone(), next.clone());
            tokio::task::spawn_blocking(move || write_file(&path, &written))
                .await
                .map_err(|e| RegistryError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other(e),
                })??;
            *state = next;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> pb::AgentInfo {
        pb::AgentInfo {
            id: Some(pb::AgentId { value: id.into() }),
            hostname: "h".into(),
            ..Default::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("agora-registry-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = temp_dir("reopen");
        let reg = LocalRegistry::open(&dir).unwrap();
        reg.apply(RegistryOp::AdmitAgent(agent("a1")))
            .await
            .unwrap();
        reg.apply(RegistryOp::MarkAgentUnreachable {
            agent_id: "a1".into(),
            time: 5.0,
        })
        .await
        .unwrap();
        drop(reg);
        let reg = LocalRegistry::open(&dir).unwrap();
        let state = reg.load().await.unwrap();
        let a = state.agent("a1").unwrap();
        assert_eq!(a.standing, AgentStanding::Unreachable as i32);
        assert_eq!(a.since, 5.0);
    }

    #[tokio::test]
    async fn removed_frameworks_are_remembered_and_bounded() {
        let dir = temp_dir("removed");
        let reg = LocalRegistry::open(&dir).unwrap();
        let info = pb::FrameworkInfo {
            id: Some(pb::FrameworkId { value: "f1".into() }),
            name: "f".into(),
            ..Default::default()
        };
        reg.apply(RegistryOp::PutFramework { info, time: 1.0 })
            .await
            .unwrap();
        reg.apply(RegistryOp::RemoveFramework {
            framework_id: "f1".into(),
            time: 2.0,
        })
        .await
        .unwrap();
        drop(reg);
        let state = LocalRegistry::open(&dir).unwrap().load().await.unwrap();
        assert!(state.frameworks.is_empty());
        assert_eq!(state.removed_frameworks[0].framework_id, "f1");

        let mut state = RegistryState::default();
        for i in 0..REMOVED_FRAMEWORKS_KEPT + 5 {
            state
                .apply(&RegistryOp::RemoveFramework {
                    framework_id: format!("f{i}"),
                    time: i as f64,
                })
                .unwrap();
        }
        assert_eq!(state.removed_frameworks.len(), REMOVED_FRAMEWORKS_KEPT);
        assert_eq!(state.removed_frameworks[0].framework_id, "f5");
    }

    #[tokio::test]
    async fn refuses_corrupt_or_truncated_file() {
        let dir = temp_dir("corrupt");
        let reg = LocalRegistry::open(&dir).unwrap();
        reg.apply(RegistryOp::AdmitAgent(agent("a1")))
            .await
            .unwrap();
        drop(reg);
        let path = dir.join("registry.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = LocalRegistry::open(&dir).err().unwrap().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = LocalRegistry::open(&dir).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(LocalRegistry::open(&dir).is_err());
    }
    fn framework(id: &str) -> pb::FrameworkInfo {
        pb::FrameworkInfo {
            id: Some(pb::FrameworkId { value: id.into() }),
            name: "f".into(),
            ..Default::default()
        }
    }

    fn cpus(amount: f64) -> pb::Resource {
        pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(amount)),
            ..Default::default()
        }
    }

    fn maintenance(agent_id: &str, mode: &str, deadline: f64) -> pb::MaintenanceRecord {
        pb::MaintenanceRecord {
            agent_id: agent_id.into(),
            mode: mode.into(),
            deadline,
            since: 0.0,
        }
    }

    /// One op of every kind, valid.
    fn every_op() -> Vec<RegistryOp> {
        vec![
            RegistryOp::AdmitAgent(agent("a1")),
            RegistryOp::MarkAgentUnreachable {
                agent_id: "a1".into(),
                time: 3.0,
            },
            RegistryOp::MarkAgentGone {
                agent_id: "a1".into(),
                time: 4.0,
            },
            RegistryOp::PutFramework {
                info: framework("f1"),
                time: 5.0,
            },
            RegistryOp::FrameworkDisconnected {
                framework_id: "f1".into(),
                time: 6.0,
            },
            RegistryOp::RemoveFramework {
                framework_id: "f1".into(),
                time: 7.0,
            },
            RegistryOp::SetWeight {
                role: "eng".into(),
                weight: 2.0,
            },
            RegistryOp::SetQuota(pb::QuotaRecord {
                role: "eng".into(),
                guarantee: vec![cpus(1.0)],
                limit: vec![cpus(4.0)],
            }),
            RegistryOp::RemoveQuota { role: "eng".into() },
            RegistryOp::PutReservation(pb::ReservationRecord {
                reservation_id: "r1".into(),
                agent_id: "a1".into(),
                role: "eng".into(),
                resources: vec![cpus(1.0)],
                ..Default::default()
            }),
            RegistryOp::RemoveReservation {
                reservation_id: "r1".into(),
            },
            RegistryOp::SetMaintenance(maintenance("a1", "DRAINING", 0.0)),
            RegistryOp::ClearMaintenance {
                agent_id: "a1".into(),
            },
        ]
    }

    #[test]
    fn every_op_converts_to_its_command() {
        use pb::registry_command::Op;
        for op in every_op() {
            let command = op.to_command();
            let matches = match (&op, command.op.as_ref().unwrap()) {
                (RegistryOp::AdmitAgent(info), Op::AdmitAgent(c)) => c.info.as_ref() == Some(info),
                (
                    RegistryOp::MarkAgentUnreachable { agent_id, .. },
                    Op::MarkAgentUnreachable(c),
                ) => &c.agent_id == agent_id,
                (RegistryOp::MarkAgentGone { agent_id, .. }, Op::MarkAgentGone(c)) => {
                    &c.agent_id == agent_id
                }
                (RegistryOp::PutFramework { info, .. }, Op::PutFramework(c)) => {
                    c.info.as_ref() == Some(info)
                }
                (
                    RegistryOp::FrameworkDisconnected { framework_id, .. },
                    Op::FrameworkDisconnected(c),
                ) => &c.framework_id == framework_id,
                (RegistryOp::RemoveFramework { framework_id, .. }, Op::RemoveFramework(c)) => {
                    &c.framework_id == framework_id
                }
                (RegistryOp::SetWeight { role, weight }, Op::SetWeight(c)) => {
                    &c.role == role && c.weight == *weight
                }
                (RegistryOp::SetQuota(q), Op::SetQuota(c)) => c.quota.as_ref() == Some(q),
                (RegistryOp::RemoveQuota { role }, Op::RemoveQuota(c)) => &c.role == role,
                (RegistryOp::PutReservation(r), Op::PutReservation(c)) => {
                    c.reservation.as_ref() == Some(r)
                }
                (RegistryOp::RemoveReservation { reservation_id }, Op::RemoveReservation(c)) => {
                    &c.reservation_id == reservation_id
                }
                (RegistryOp::SetMaintenance(m), Op::SetMaintenance(c)) => {
                    c.maintenance.as_ref() == Some(m)
                }
                (RegistryOp::ClearMaintenance { agent_id }, Op::ClearMaintenance(c)) => {
                    &c.agent_id == agent_id
                }
                _ => false,
            };
            assert!(matches, "{op:?} became {command:?}");
        }
    }

    #[test]
    fn apply_is_apply_command_at_the_ops_time() {
        let mut via_op = RegistryState::default();
        let mut via_command = RegistryState::default();
        for op in every_op() {
            let Some(time) = op.time() else {
                continue;
            };
            via_op.apply(&op).unwrap();
            via_command.apply_command(&op.to_command(), time).unwrap();
            assert_eq!(via_op, via_command, "after {op:?}");
        }
    }

    #[test]
    fn agent_standing_times_come_from_the_command() {
        let mut state = RegistryState::default();
        let admit = RegistryOp::AdmitAgent(agent("a1")).to_command();
        state.apply_command(&admit, 10.0).unwrap();
        assert_eq!(state.agent("a1").unwrap().since, 10.0);
        // Re-admitting an admitted agent updates its info, not when it was admitted.
        let mut renamed = agent("a1");
        renamed.hostname = "h2".into();
        state
            .apply_command(&RegistryOp::AdmitAgent(renamed).to_command(), 20.0)
            .unwrap();
        let a = state.agent("a1").unwrap();
        assert_eq!(
            (a.since, a.info.as_ref().unwrap().hostname.as_str()),
            (10.0, "h2")
        );

        let unreachable = RegistryOp::MarkAgentUnreachable {
            agent_id: "a1".into(),
            time: 999.0,
        };
        state
            .apply_command(&unreachable.to_command(), 30.0)
            .unwrap();
        let a = state.agent("a1").unwrap();
        assert_eq!(
            (a.standing, a.since),
            (AgentStanding::Unreachable as i32, 30.0)
        );
        state.apply_command(&admit, 40.0).unwrap();
        let a = state.agent("a1").unwrap();
        assert_eq!(
            (a.standing, a.since),
            (AgentStanding::Admitted as i32, 40.0)
        );

        // Unknown agents are left alone: the op is idempotent, not an error.
        let unknown = RegistryOp::MarkAgentGone {
            agent_id: "nobody".into(),
            time: 1.0,
        };
        let before = state.clone();
        state.apply_command(&unknown.to_command(), 50.0).unwrap();
        assert_eq!(state, before);
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut state = RegistryState::default();
        state.apply(&RegistryOp::AdmitAgent(agent("a1"))).unwrap();
        state
            .apply(&RegistryOp::PutFramework {
                info: framework("f1"),
                time: 1.0,
            })
            .unwrap();
        let before = state.clone();
        let mut no_id = agent("x");
        no_id.id = None;
        let bad = [
            RegistryOp::AdmitAgent(no_id).to_command(),
            RegistryOp::AdmitAgent(agent("a/b")).to_command(),
            RegistryOp::PutFramework {
                info: pb::FrameworkInfo::default(),
                time: 1.0,
            }
            .to_command(),
            RegistryOp::PutFramework {
                info: pb::FrameworkInfo {
                    roles: vec!["bad role".into()],
                    ..framework("f2")
                },
                time: 1.0,
            }
            .to_command(),
            RegistryOp::MarkAgentGone {
                agent_id: String::new(),
                time: 1.0,
            }
            .to_command(),
            RegistryOp::SetWeight {
                role: "eng".into(),
                weight: f64::NAN,
            }
            .to_command(),
            RegistryOp::SetWeight {
                role: "a b".into(),
                weight: 2.0,
            }
            .to_command(),
            RegistryOp::SetQuota(pb::QuotaRecord {
                role: "*".into(),
                ..Default::default()
            })
            .to_command(),
            RegistryOp::PutReservation(pb::ReservationRecord {
                reservation_id: "r".into(),
                agent_id: "a1".into(),
                role: "eng".into(),
                ..Default::default()
            })
            .to_command(),
            RegistryOp::SetMaintenance(maintenance("a1", "UP", 0.0)).to_command(),
            pb::RegistryCommand { op: None },
            pb::RegistryCommand {
                op: Some(pb::registry_command::Op::SetQuota(Default::default())),
            },
        ];
        for command in bad {
            let result = state.apply_command(&command, 5.0);
            assert!(result.is_err(), "{command:?} was accepted");
            assert_eq!(state, before, "{command:?} changed the registry");
        }
        // A time that is not a clock reading is refused whatever the op.
        for time in [f64::NAN, f64::INFINITY, -1.0] {
            let admit = RegistryOp::AdmitAgent(agent("a2")).to_command();
            assert!(state.apply_command(&admit, time).is_err());
        }
        assert_eq!(state, before);
    }

    #[test]
    fn frameworks_are_bounded_and_removals_not_duplicated() {
        let mut state = RegistryState::default();
        for i in 0..agora_core::limits::MAX_FRAMEWORKS {
            state.frameworks.push(RegisteredFramework {
                info: Some(framework(&format!("f{i}"))),
                registered_time: 0.0,
                disconnected_time: 0.0,
            });
        }
        let new = RegistryOp::PutFramework {
            info: framework("new"),
            time: 1.0,
        };
        let error = state.apply(&new).unwrap_err();
        assert!(error.contains("frameworks"), "{error}");
        // Updating a registered one is still fine.
        state
            .apply(&RegistryOp::PutFramework {
                info: framework("f0"),
                time: 1.0,
            })
            .unwrap();

        let remove = RegistryOp::RemoveFramework {
            framework_id: "f0".into(),
            time: 2.0,
        };
        state.apply(&remove).unwrap();
        state.apply_command(&remove.to_command(), 3.0).unwrap();
        assert_eq!(state.removed_frameworks.len(), 1);
        assert_eq!(state.removed_frameworks[0].removed_time, 2.0);
        assert!(state.framework("f0").is_none());
    }

    #[test]
    fn weights() {
        let mut state = RegistryState::default();
        let set = |role: &str, weight: f64| RegistryOp::SetWeight {
            role: role.into(),
            weight,
        };
        state.apply(&set("eng", 3.0)).unwrap();
        state.apply(&set("*", 0.5)).unwrap();
        assert_eq!(state.weights.get("eng"), Some(&3.0));
        state.apply(&set("eng", 1.0)).unwrap();
        assert_eq!(state.weights.get("eng"), None);
        assert_eq!(state.weights.len(), 1);

        for i in 1..agora_core::limits::MAX_WEIGHTED_ROLES {
            state.weights.insert(format!("r{i}"), 2.0);
        }
        assert!(state.apply(&set("one-too-many", 2.0)).is_err());
        state.apply(&set("r1", 5.0)).unwrap();
        state.apply(&set("one-too-many", 1.0)).unwrap();
    }

    #[test]
    fn quotas_and_reservations() {
        let mut state = RegistryState::default();
        let quota = pb::QuotaRecord {
            role: "eng".into(),
            guarantee: vec![cpus(2.0)],
            limit: vec![],
        };
        state.apply(&RegistryOp::SetQuota(quota.clone())).unwrap();
        let replaced = pb::QuotaRecord {
            guarantee: vec![cpus(3.0)],
            ..quota
        };
        state
            .apply(&RegistryOp::SetQuota(replaced.clone()))
            .unwrap();
        assert_eq!(state.quotas.len(), 1);
        assert_eq!(state.quotas.get("eng"), Some(&replaced));
        state
            .apply(&RegistryOp::RemoveQuota { role: "eng".into() })
            .unwrap();
        assert!(state.quotas.is_empty());

        let reservation = pb::ReservationRecord {
            reservation_id: "r1".into(),
            agent_id: "a1".into(),
            role: "eng".into(),
            principal: "ops".into(),
            resources: vec![cpus(1.0)],
            labels: None,
        };
        state
            .apply(&RegistryOp::PutReservation(reservation.clone()))
            .unwrap();
        assert_eq!(state.reservations.get("r1"), Some(&reservation));
        state
            .apply(&RegistryOp::RemoveReservation {
                reservation_id: "r1".into(),
            })
            .unwrap();
        assert!(state.reservations.is_empty());
        // Removing what is not there is a harmless replay.
        state
            .apply(&RegistryOp::RemoveReservation {
                reservation_id: "r1".into(),
            })
            .unwrap();
    }

    #[test]
    fn maintenance_since_follows_the_mode() {
        let mut state = RegistryState::default();
        let set = |record: pb::MaintenanceRecord| RegistryOp::SetMaintenance(record).to_command();
        state
            .apply_command(&set(maintenance("a1", "DRAINING", 100.0)), 10.0)
            .unwrap();
        assert_eq!(state.maintenance["a1"].since, 10.0);
        // A new deadline keeps when draining began.
        state
            .apply_command(&set(maintenance("a1", "DRAINING", 200.0)), 20.0)
            .unwrap();
        assert_eq!(
            (
                state.maintenance["a1"].since,
                state.maintenance["a1"].deadline
            ),
            (10.0, 200.0)
        );
        state
            .apply_command(&set(maintenance("a1", "DRAINED", 200.0)), 30.0)
            .unwrap();
        assert_eq!(state.maintenance["a1"].since, 30.0);
        let clear = RegistryOp::ClearMaintenance {
            agent_id: "a1".into(),
        };
        state.apply_command(&clear.to_command(), 40.0).unwrap();
        assert!(state.maintenance.is_empty());
    }

    #[test]
    fn new_records_survive_encoding() {
        let mut state = RegistryState::default();
        for op in every_op() {
            state.apply_command(&op.to_command(), 1.0).unwrap();
        }
        state
            .apply(&RegistryOp::SetWeight {
                role: "eng".into(),
                weight: 2.0,
            })
            .unwrap();
        state
            .apply(&RegistryOp::SetMaintenance(maintenance(
                "a2", "DRAINED", 5.0,
            )))
            .unwrap();
        let decoded = RegistryState::decode(state.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.weights.get("eng"), Some(&2.0));
    }

    #[tokio::test]
    async fn local_registry_refuses_bad_ops_and_keeps_its_file() {
        let dir = temp_dir("refused");
        let reg = LocalRegistry::open(&dir).unwrap();
        reg.apply(RegistryOp::AdmitAgent(agent("a1")))
            .await
            .unwrap();
        let file = std::fs::read(dir.join("registry.bin")).unwrap();
        let err = reg
            .apply(RegistryOp::SetWeight {
                role: "eng".into(),
                weight: -1.0,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Rejected(_)), "{err}");
        assert_eq!(std::fs::read(dir.join("registry.bin")).unwrap(), file);
        assert!(reg.load().await.unwrap().weights.is_empty());
    }
}
