//! The registry: what the master must not forget across restarts and failovers.
//!
//! It records admitted, unreachable and gone agents, and frameworks with their info and
//! when they disconnected (so a failover timeout keeps running across a master
//! restart). Everything else (offers, the task map, connections) is soft state that
//! agents and frameworks rebuild when they re-register.
//!
//! [`Registry`] is the seam for replication: [`LocalRegistry`] keeps one checksummed
//! file on this master's disk; the replicated implementation commits the same
//! [`RegistryOp`]s through Raft before acknowledging them.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use agora_core::ids::id_str;
use agora_proto as pb;
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
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::AgentInfo>,
    #[prost(enumeration = "AgentStanding", tag = "2")]
    pub standing: i32,
    /// Seconds since the epoch when the standing last changed.
    #[prost(double, tag = "3")]
    pub since: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisteredFramework {
    /// Always carries its id.
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

/// Everything the registry holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegistryState {
    #[prost(message, repeated, tag = "1")]
    pub agents: Vec<RegisteredAgent>,
    #[prost(message, repeated, tag = "2")]
    pub frameworks: Vec<RegisteredFramework>,
    /// Oldest first, at most `REMOVED_FRAMEWORKS_KEPT`.
    #[prost(message, repeated, tag = "3")]
    pub removed_frameworks: Vec<RemovedFramework>,
}

/// One change to the registry. Ops are idempotent so a replay is harmless.
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
}

fn agent_id_of(info: &pb::AgentInfo) -> &str {
    id_str(&info.id)
}

fn framework_id_of(info: &pb::FrameworkInfo) -> &str {
    id_str(&info.id)
}

impl RegistryState {
    /// Applies an op in place. Pure, so every replica computes the same state.
    pub fn apply(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::AdmitAgent(info) => {
                let id = agent_id_of(info);
                let entry = RegisteredAgent {
                    info: Some(info.clone()),
                    standing: AgentStanding::Admitted as i32,
                    since: agora_core::time::now_secs(),
                };
                match self
                    .agents
                    .iter_mut()
                    .find(|a| a.info.as_ref().map(agent_id_of) == Some(id))
                {
                    Some(existing) => *existing = entry,
                    None => self.agents.push(entry),
                }
            }
            RegistryOp::MarkAgentUnreachable { agent_id, time } => {
                self.set_standing(agent_id, AgentStanding::Unreachable, *time)
            }
            RegistryOp::MarkAgentGone { agent_id, time } => {
                self.set_standing(agent_id, AgentStanding::Gone, *time)
            }
            RegistryOp::PutFramework { info, time } => {
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
                    None => self.frameworks.push(RegisteredFramework {
                        info: Some(info.clone()),
                        registered_time: *time,
                        disconnected_time: 0.0,
                    }),
                }
            }
            RegistryOp::FrameworkDisconnected { framework_id, time } => {
                if let Some(f) = self
                    .frameworks
                    .iter_mut()
                    .find(|f| f.info.as_ref().map(framework_id_of) == Some(framework_id))
                {
                    f.disconnected_time = *time;
                }
            }
            RegistryOp::RemoveFramework { framework_id, time } => {
                self.frameworks
                    .retain(|f| f.info.as_ref().map(framework_id_of) != Some(framework_id));
                self.removed_frameworks.push(RemovedFramework {
                    framework_id: framework_id.clone(),
                    removed_time: *time,
                });
                let excess = self
                    .removed_frameworks
                    .len()
                    .saturating_sub(REMOVED_FRAMEWORKS_KEPT);
                self.removed_frameworks.drain(..excess);
            }
        }
    }

    fn set_standing(&mut self, agent_id: &str, standing: AgentStanding, time: f64) {
        if let Some(a) = self
            .agents
            .iter_mut()
            .find(|a| a.info.as_ref().map(agent_id_of) == Some(agent_id))
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
            next.apply(&op);
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
            state.apply(&RegistryOp::RemoveFramework {
                framework_id: format!("f{i}"),
                time: i as f64,
            });
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
}
