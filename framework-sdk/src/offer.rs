//! Packing tasks into offers: `TaskBuilder` describes a command task, `OfferResources`
//! is what is left of one offer, and taking a task from it builds the `TaskInfo` and
//! subtracts exactly what the task uses, so several tasks fit into one offer without
//! ever asking for more than was offered.
//!
//! All arithmetic goes through `agora_core::Resources` (fixed point, like the master),
//! so "it fits here" means the master will agree.

use agora_core::limits;
use agora_core::resources::{Quantity, RangeSet, ResourceKey, UNRESERVED_ROLE};
use agora_core::{ResourceError, Resources};
use agora_proto as pb;

/// Thousandths: the fixed-point unit of `Resources` scalars.
const SCALE: f64 = 1000.0;

/// The most ports one task may ask for; a port range holds at most 65536 anyway.
const MAX_PORTS: usize = 65_536;

/// Why an offer cannot be used, or a task cannot be built from it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OfferError {
    /// The offer itself is malformed (no id, bad resources).
    #[error("offer {offer_id}: {reason}")]
    InvalidOffer { offer_id: String, reason: String },
    /// The task description is invalid whatever the offer.
    #[error("task '{task_id}': {reason}")]
    InvalidTask { task_id: String, reason: String },
    /// Not enough of one resource is left in the offer.
    #[error("task '{task_id}' does not fit: needs {needed} {resource}, {available} left")]
    DoesNotFit {
        task_id: String,
        resource: String,
        needed: f64,
        available: f64,
    },
}

/// A command task to be placed on an offer. Build it once per task and hand it to
/// [`OfferResources::take`]; nothing is checked until then.
///
/// ```
/// use agora_sdk::TaskBuilder;
/// let task = TaskBuilder::new("web-1").shell("python3 -m http.server $PORT0").cpus(0.5).mem(64.0).ports(1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskBuilder {
    /// Unique per framework; checked against the protocol's id rules on `take`.
    task_id: String,
    /// Display name; the task id when empty.
    name: String,
    /// What to run; `take` refuses a builder without one.
    command: Option<pb::CommandInfo>,
    /// Cpus wanted; finite and not negative (checked on `take`).
    cpus: f64,
    /// Memory wanted, in MB; finite and not negative.
    mem: f64,
    /// Disk wanted, in MB; finite and not negative.
    disk: f64,
    /// GPUs wanted; finite and not negative (0: none asked for).
    gpus: f64,
    /// One entry per port to take from the offer's `ports` ranges, in order: 0 takes
    /// any free port, any other number exactly that port.
    ports: Vec<u64>,
    /// Extra environment variables for the command, in order.
    env: Vec<(String, String)>,
    /// Files fetched into the sandbox before the command starts, added after the
    /// command's own URIs, in order.
    uris: Vec<pb::command_info::Uri>,
    /// Task labels, in order.
    labels: Vec<(String, String)>,
    /// Image (from the agents' image store) the task's root filesystem comes from;
    /// `None` runs it on the agent's own filesystem.
    image: Option<String>,
    /// Container type and volumes; `image` is set into it on `take`.
    container: Option<pb::ContainerInfo>,
    /// Run by the executor next to the task; results arrive on status updates.
    health_check: Option<pb::HealthCheck>,
    /// SIGTERM → SIGKILL grace period in seconds (the agent's default when `None`).
    kill_grace_period_seconds: Option<f64>,
}

impl TaskBuilder {
    pub fn new(task_id: impl Into<String>) -> Self {
        TaskBuilder {
            task_id: task_id.into(),
            ..Default::default()
        }
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs `command` under `/bin/sh -c`.
    pub fn shell(mut self, command: impl Into<String>) -> Self {
        self.command = Some(pb::CommandInfo {
            shell: true,
            value: command.into(),
            ..Default::default()
        });
        self
    }

    /// Runs `program` directly with `args` as its argv (`argv[0]` included, as in Mesos).
    pub fn exec(mut self, program: impl Into<String>, args: Vec<String>) -> Self {
        self.command = Some(pb::CommandInfo {
            shell: false,
            value: program.into(),
            arguments: args,
            ..Default::default()
        });
        self
    }

    /// Uses `command` as given (URIs, user, ...); `env` is still added to it.
    pub fn command(mut self, command: pb::CommandInfo) -> Self {
        self.command = Some(command);
        self
    }

    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Memory in MB.
    pub fn mem(mut self, mem: f64) -> Self {
        self.mem = mem;
        self
    }

    /// Disk in MB.
    pub fn disk(mut self, disk: f64) -> Self {
        self.disk = disk;
        self
    }

    /// GPUs (the offer's `gpus` scalar).
    pub fn gpus(mut self, gpus: f64) -> Self {
        self.gpus = gpus;
        self
    }

    /// Takes `count` ports from the offer; the command sees them as `$PORT0`,
    /// `$PORT1`, ... and the first also as `$PORT` (Marathon's convention).
    pub fn ports(mut self, count: u64) -> Self {
        self.ports = vec![0; usize::try_from(count).unwrap_or(usize::MAX).min(MAX_PORTS)];
        self
    }

    /// Takes one port per entry, in order: 0 any free port of the offer, any other
    /// number exactly that port (the task does not fit when it is not offered). The
    /// command sees them as with [`TaskBuilder::ports`].
    pub fn host_ports(mut self, ports: Vec<u64>) -> Self {
        self.ports = ports;
        self
    }

    /// Runs the task in a container of this type (MESOS, or DOCKER for the agent's
    /// OCI path) even without an image.
    pub fn container_type(mut self, kind: pb::container_info::Type) -> Self {
        self.container_mut().r#type = kind as i32;
        self
    }

    /// Mounts a volume into the task's container (read by the agent's OCI path; the
    /// host path must lie in the sandbox or in a place the agent allows).
    pub fn volume(mut self, volume: pb::Volume) -> Self {
        self.container_mut().volumes.push(volume);
        self
    }

    /// The task's health check, run by its executor on the agent.
    pub fn health_check(mut self, check: pb::HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// How long the task gets between SIGTERM and SIGKILL when it is killed.
    pub fn kill_grace_period(mut self, seconds: f64) -> Self {
        self.kill_grace_period_seconds = Some(seconds);
        self
    }

    fn container_mut(&mut self) -> &mut pb::ContainerInfo {
        self.container.get_or_insert_with(|| pb::ContainerInfo {
            r#type: pb::container_info::Type::Mesos as i32,
            ..Default::default()
        })
    }

    /// Fetches `value` (`http://`, `file://` or an absolute path) into the sandbox
    /// before the command starts, under the last component of its path.
    pub fn uri(self, value: impl Into<String>) -> Self {
        self.fetch(pb::command_info::Uri {
            value: value.into(),
            ..Default::default()
        })
    }

    /// Fetches `uri` into the sandbox before the command starts (`executable`,
    /// `extract` and `output_file` as Mesos' fetcher reads them).
    pub fn fetch(mut self, uri: pb::command_info::Uri) -> Self {
        self.uris.push(uri);
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Runs the task in a container whose root filesystem is `image` from the agent's
    /// image store (`agora image import`); needs agents with the `oci` containerizer.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Builds the task against `offer`, taking its resources from it.
    pub fn build(&self, offer: &mut OfferResources) -> Result<pb::TaskInfo, OfferError> {
        offer.take(self)
    }

    fn invalid(&self, reason: impl Into<String>) -> OfferError {
        OfferError::InvalidTask {
            task_id: self.task_id.clone(),
            reason: reason.into(),
        }
    }
}

/// What is left of one offer while tasks are packed into it.
#[derive(Debug, Clone)]
pub struct OfferResources {
    /// The offer the tasks will be launched with.
    offer_id: pb::OfferId,
    /// The offer's agent; every task built here runs there.
    agent_id: pb::AgentId,
    /// The agent's hostname, for display and placement decisions.
    hostname: String,
    /// Offered minus everything taken so far; never negative.
    remaining: Resources,
}

impl OfferResources {
    /// Reads an offer; fails on a missing id or resources that do not parse.
    pub fn new(offer: &pb::Offer) -> Result<Self, OfferError> {
        let offer_id = offer.id.clone().unwrap_or_default();
        let invalid = |reason: String| OfferError::InvalidOffer {
            offer_id: offer_id.value.clone(),
            reason,
        };
        if offer_id.value.is_empty() {
            return Err(invalid("the offer has no id".into()));
        }
        let agent_id = match &offer.agent_id {
            Some(agent_id) if !agent_id.value.is_empty() => agent_id.clone(),
            _ => return Err(invalid("the offer has no agent id".into())),
        };
        let remaining =
            Resources::from_proto(&offer.resources).map_err(|e| invalid(e.to_string()))?;
        Ok(OfferResources {
            offer_id,
            agent_id,
            hostname: offer.hostname.clone(),
            remaining,
        })
    }

    pub fn offer_id(&self) -> &pb::OfferId {
        &self.offer_id
    }

    pub fn agent_id(&self) -> &pb::AgentId {
        &self.agent_id
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Everything not yet taken.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// True when `task` would fit into what is left.
    pub fn fits(&self, task: &TaskBuilder) -> bool {
        self.plan(task).is_ok()
    }

    /// The ports `take` would give `task` now, in the order it asks for them. Lets a
    /// caller derive more of the task (environment, health check port) from its ports
    /// first and then take it with exactly these.
    pub fn assign_ports(&self, task: &TaskBuilder) -> Result<Vec<u64>, OfferError> {
        self.take_ports(task).map(|(_, ports)| ports)
    }

    /// Builds `task` on this offer's agent and subtracts what it uses. On error
    /// nothing is taken. Variables set with [`TaskBuilder::env`] replace the port
    /// variables of the same name.
    pub fn take(&mut self, task: &TaskBuilder) -> Result<pb::TaskInfo, OfferError> {
        let (taken, ports) = self.plan(task)?;
        self.remaining
            .checked_sub(&taken)
            .map_err(|e| task.invalid(e.to_string()))?;

        let mut command = task.command.clone().unwrap_or_default();
        command.uris.extend(task.uris.iter().cloned());
        let environment = command.environment.get_or_insert_with(Default::default);
        let port_vars = ports
            .iter()
            .enumerate()
            .map(|(i, port)| (format!("PORT{i}"), port.to_string()));
        let first_port = ports
            .first()
            .map(|port| ("PORT".to_string(), port.to_string()));
        let explicit: std::collections::HashSet<&str> =
            task.env.iter().map(|(name, _)| name.as_str()).collect();
        let automatic = port_vars
            .chain(first_port)
            .filter(|(name, _)| !explicit.contains(name.as_str()));
        for (name, value) in automatic.chain(task.env.iter().cloned()) {
            environment
                .variables
                .push(pb::environment::Variable { name, value });
        }
        let labels = (!task.labels.is_empty()).then(|| pb::Labels {
            labels: task
                .labels
                .iter()
                .map(|(key, value)| pb::Label {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let name = if task.name.is_empty() {
            task.task_id.clone()
        } else {
            task.name.clone()
        };
        let mut container = task.container.clone();
        if let Some(image) = &task.image {
            let container = container.get_or_insert_with(|| pb::ContainerInfo {
                r#type: pb::container_info::Type::Mesos as i32,
                ..Default::default()
            });
            container.image = Some(pb::container_info::Image {
                name: image.clone(),
            });
        }
        let info = pb::TaskInfo {
            name,
            task_id: Some(pb::TaskId {
                value: task.task_id.clone(),
            }),
            agent_id: Some(self.agent_id.clone()),
            resources: taken.to_proto(),
            command: Some(command),
            labels,
            container,
            health_check: task.health_check.clone(),
            kill_policy: task.kill_grace_period_seconds.map(|grace| pb::KillPolicy {
                grace_period_seconds: Some(grace),
            }),
            ..Default::default()
        };
        // Env and labels were not checked yet; refuse here rather than at the master,
        // and give the resources back so the offer is as before.
        if let Err(e) = limits::task_info(&info) {
            self.remaining.add(&taken);
            return Err(task.invalid(e.to_string()));
        }
        Ok(info)
    }

    /// What `task` would take from `remaining`, and its ports in order.
    fn plan(&self, task: &TaskBuilder) -> Result<(Resources, Vec<u64>), OfferError> {
        limits::id("task_id", Some(&task.task_id)).map_err(|e| task.invalid(e.to_string()))?;
        if task.command.is_none() {
            return Err(task.invalid("no command given (use shell, exec or command)"));
        }
        let mut wanted = Vec::new();
        for (name, amount) in [
            ("cpus", task.cpus),
            ("mem", task.mem),
            ("disk", task.disk),
            ("gpus", task.gpus),
        ] {
            if !(0.0..=limits::MAX_SCALAR).contains(&amount) {
                return Err(task.invalid(format!(
                    "{name} must be a finite number from 0 to {}",
                    limits::MAX_SCALAR
                )));
            }
            let thousandths = (amount * SCALE).round() as i64;
            wanted.extend(self.take_scalar(task, name, thousandths)?);
        }
        let (port_resources, ports) = self.take_ports(task)?;
        wanted.extend(port_resources);
        let taken = Resources::from_proto(&wanted)
            .map_err(|e: ResourceError| task.invalid(e.to_string()))?;
        Ok((taken, ports))
    }

    /// Entries of resource `name`, reserved roles first: a framework's reservations
    /// are its own, so they are used before the shared pool.
    fn entries<'a>(&'a self, name: &'a str) -> Vec<(&'a ResourceKey, &'a Quantity)> {
        let mut entries: Vec<_> = self
            .remaining
            .iter()
            .filter(|(key, _)| key.name == name)
            .collect();
        entries.sort_by_key(|(key, _)| key.role == UNRESERVED_ROLE);
        entries
    }

    fn take_scalar(
        &self,
        task: &TaskBuilder,
        name: &str,
        mut wanted: i64,
    ) -> Result<Vec<pb::Resource>, OfferError> {
        let mut out = Vec::new();
        if wanted <= 0 {
            return Ok(out);
        }
        let available: i64 = self
            .entries(name)
            .iter()
            .map(|(_, q)| match q {
                Quantity::Scalar(v) => *v,
                _ => 0,
            })
            .sum();
        if available < wanted {
            return Err(OfferError::DoesNotFit {
                task_id: task.task_id.clone(),
                resource: name.to_string(),
                needed: wanted as f64 / SCALE,
                available: available as f64 / SCALE,
            });
        }
        for (key, quantity) in self.entries(name) {
            let Quantity::Scalar(have) = quantity else {
                continue;
            };
            let take = wanted.min(*have);
            if take > 0 {
                out.push(pb::Resource {
                    name: name.to_string(),
                    role: key.role.clone(),
                    value: Some(pb::resource::Value::Scalar(take as f64 / SCALE)),
                    reservation: None,
                });
                wanted -= take;
            }
            if wanted == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Fixed ports first, so a task asking for a given port and for any others never
    /// gets that port twice; then the lowest free ports, reserved roles first.
    fn take_ports(&self, task: &TaskBuilder) -> Result<(Vec<pb::Resource>, Vec<u64>), OfferError> {
        if task.ports.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        if task.ports.len() > MAX_PORTS {
            return Err(task.invalid(format!("more than {MAX_PORTS} ports asked for")));
        }
        let mut free: Vec<(&ResourceKey, RangeSet)> = self
            .entries("ports")
            .into_iter()
            .filter_map(|(key, quantity)| match quantity {
                Quantity::Ranges(set) => Some((key, set.clone())),
                _ => None,
            })
            .collect();
        let mut chosen = vec![RangeSet::new(); free.len()];
        let mut ports = vec![0; task.ports.len()];
        let mut take = |entry: usize, port: u64, free: &mut [(&ResourceKey, RangeSet)]| {
            free[entry]
                .1
                .remove(&RangeSet::from_intervals([(port, port)]));
            chosen[entry].insert(port, port);
        };
        for (slot, &wanted) in task.ports.iter().enumerate() {
            if wanted == 0 {
                continue;
            }
            let Some(entry) = free
                .iter()
                .position(|(_, set)| set.contains_range(wanted, wanted))
            else {
                return Err(OfferError::DoesNotFit {
                    task_id: task.task_id.clone(),
                    resource: format!("port {wanted}"),
                    needed: 1.0,
                    available: 0.0,
                });
            };
            take(entry, wanted, &mut free);
            ports[slot] = wanted;
        }
        let dynamic = task.ports.iter().filter(|p| **p == 0).count();
        let mut assigned = 0;
        for (slot, &wanted) in task.ports.iter().enumerate() {
            if wanted != 0 {
                continue;
            }
            let found = free.iter().enumerate().find_map(|(entry, (_, set))| {
                set.take_first(1).values().next().map(|port| (entry, port))
            });
            let Some((entry, port)) = found else {
                return Err(OfferError::DoesNotFit {
                    task_id: task.task_id.clone(),
                    resource: "ports".into(),
                    needed: dynamic as f64,
                    available: assigned as f64,
                });
            };
            take(entry, port, &mut free);
            ports[slot] = port;
            assigned += 1;
        }
        let resources = free
            .iter()
            .zip(&chosen)
            .filter(|(_, set)| !set.is_empty())
            .map(|((key, _), set)| pb::Resource {
                name: "ports".into(),
                role: key.role.clone(),
                value: Some(pb::resource::Value::Ranges(pb::Ranges {
                    range: set
                        .intervals()
                        .iter()
                        .map(|&(begin, end)| pb::Range { begin, end })
                        .collect(),
                })),
                reservation: None,
            })
            .collect();
        Ok((resources, ports))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(resources: &str) -> pb::Offer {
        pb::Offer {
            id: Some(pb::OfferId { value: "o1".into() }),
            agent_id: Some(pb::AgentId { value: "a1".into() }),
            hostname: "host1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        }
    }

    fn task(id: &str) -> TaskBuilder {
        TaskBuilder::new(id).shell("true").cpus(0.1).mem(32.0)
    }

    #[test]
    fn packs_tasks_until_the_offer_runs_out() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:100")).unwrap();
        let mut launched = Vec::new();
        for i in 0..10 {
            match room.take(&task(&format!("t{i}"))) {
                Ok(info) => launched.push(info),
                Err(e) => {
                    assert!(
                        matches!(&e, OfferError::DoesNotFit { resource, .. } if resource == "mem"),
                        "{e}"
                    );
                    break;
                }
            }
        }
        // Memory binds: 3 × 32 MB fit into 100 MB, a fourth does not.
        assert_eq!(launched.len(), 3);
        assert_eq!(room.remaining().mem(), 4.0);
        assert_eq!(room.remaining().cpus(), 0.7);
        let info = &launched[0];
        assert_eq!(info.agent_id.as_ref().unwrap().value, "a1");
        assert_eq!(info.name, "t0");
        assert_eq!(
            Resources::from_proto(&info.resources).unwrap(),
            Resources::parse("cpus:0.1;mem:32").unwrap()
        );
    }

    #[test]
    fn ten_tenths_of_a_cpu_fill_one_cpu_exactly() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:1000")).unwrap();
        for i in 0..10 {
            room.take(&task(&format!("t{i}"))).unwrap();
        }
        assert_eq!(room.remaining().cpus(), 0.0);
        assert!(!room.fits(&task("t10")));
    }

    #[test]
    fn ports_are_handed_out_once_and_exported_to_the_command() {
        let mut room =
            OfferResources::new(&offer("cpus:4;mem:1000;ports:[31000-31001,31005-31005]")).unwrap();
        let first = room.take(&task("a").ports(2)).unwrap();
        let env: Vec<(String, String)> = first
            .command
            .as_ref()
            .unwrap()
            .environment
            .as_ref()
            .unwrap()
            .variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        assert_eq!(
            env,
            [("PORT0", "31000"), ("PORT1", "31001"), ("PORT", "31000")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let second = room.take(&task("b").ports(1)).unwrap();
        assert_eq!(
            Resources::from_proto(&second.resources)
                .unwrap()
                .ranges("ports")
                .intervals(),
            &[(31005, 31005)]
        );
        let err = room.take(&task("c").ports(1)).unwrap_err();
        assert!(
            matches!(err, OfferError::DoesNotFit { ref resource, .. } if resource == "ports"),
            "{err}"
        );
        // A failed take leaves the offer untouched.
        assert_eq!(room.remaining().cpus(), 3.8);
    }

    #[test]
    fn reserved_resources_are_used_before_unreserved_ones() {
        let mut room = OfferResources::new(&offer("cpus(eng):0.5;cpus:1;mem:100")).unwrap();
        let info = room
            .take(&TaskBuilder::new("t").shell("true").cpus(0.8).mem(10.0))
            .unwrap();
        let used = Resources::from_proto(&info.resources).unwrap();
        assert_eq!(
            used,
            Resources::parse("cpus(eng):0.5;cpus:0.3;mem:10").unwrap()
        );
        assert_eq!(
            room.remaining(),
            &Resources::parse("cpus:0.7;mem:90").unwrap()
        );
    }

    #[test]
    fn invalid_tasks_and_offers_are_refused_without_taking_anything() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:100")).unwrap();
        let before = room.remaining().clone();
        for bad in [
            TaskBuilder::new("no-command").cpus(0.1),
            task("a/b"),
            task("").cpus(0.1),
            task("nan").cpus(f64::NAN),
            task("negative").mem(-1.0),
            task("big-env").env("X", "v".repeat(64 * 1024)),
        ] {
            let err = room.take(&bad).unwrap_err();
            assert!(
                matches!(err, OfferError::InvalidTask { .. }),
                "{}: {err}",
                bad.task_id()
            );
            assert_eq!(room.remaining(), &before);
        }
        let mut no_id = offer("cpus:1");
        no_id.id = None;
        assert!(matches!(
            OfferResources::new(&no_id),
            Err(OfferError::InvalidOffer { .. })
        ));
    }

    #[test]
    fn labels_env_and_name_reach_the_task() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:100")).unwrap();
        let info = task("t")
            .name("hello")
            .env("GREETING", "hi")
            .label("team", "infra")
            .build(&mut room)
            .unwrap();
        assert_eq!(info.name, "hello");
        assert_eq!(info.labels.unwrap().labels[0].key, "team");
        let vars = info.command.unwrap().environment.unwrap().variables;
        assert_eq!(
            (vars[0].name.as_str(), vars[0].value.as_str()),
            ("GREETING", "hi")
        );
    }

    #[test]
    fn fixed_ports_are_taken_exactly_and_never_handed_out_twice() {
        let mut room = OfferResources::new(&offer("cpus:4;mem:1000;ports:[31000-31002]")).unwrap();
        // The fixed port is taken first, so the dynamic one before it skips it.
        let builder = task("a").host_ports(vec![0, 31000]);
        assert_eq!(room.assign_ports(&builder).unwrap(), [31001, 31000]);
        let info = room.take(&builder).unwrap();
        assert_eq!(
            Resources::from_proto(&info.resources)
                .unwrap()
                .ranges("ports")
                .intervals(),
            &[(31000, 31001)]
        );
        let err = room.take(&task("b").host_ports(vec![31000])).unwrap_err();
        assert!(
            matches!(err, OfferError::DoesNotFit { ref resource, .. } if resource == "port 31000"),
            "{err}"
        );
        let err = room.take(&task("c").host_ports(vec![0, 0])).unwrap_err();
        assert!(
            matches!(err, OfferError::DoesNotFit { ref resource, .. } if resource == "ports"),
            "{err}"
        );
        assert_eq!(
            room.remaining().ranges("ports").intervals(),
            &[(31002, 31002)]
        );
    }

    #[test]
    fn explicit_env_replaces_the_port_variables() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:100;ports:[5000-5001]")).unwrap();
        let info = task("t")
            .ports(2)
            .env("PORT1", "80")
            .build(&mut room)
            .unwrap();
        let vars: Vec<(String, String)> = info
            .command
            .unwrap()
            .environment
            .unwrap()
            .variables
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect();
        assert_eq!(
            vars,
            [("PORT0", "5000"), ("PORT", "5000"), ("PORT1", "80")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[test]
    fn container_health_check_kill_policy_and_gpus_reach_the_task() {
        let mut room = OfferResources::new(&offer("cpus:1;mem:100;gpus:2")).unwrap();
        let check = pb::HealthCheck {
            r#type: pb::health_check::Type::Tcp as i32,
            tcp: Some(pb::health_check::Tcp { port: 8080 }),
            ..Default::default()
        };
        let volume = pb::Volume {
            container_path: "/data".into(),
            host_path: "data".into(),
            mode: pb::volume::Mode::Rw as i32,
        };
        let info = task("t")
            .gpus(1.0)
            .container_type(pb::container_info::Type::Docker)
            .image("busybox")
            .volume(volume.clone())
            .health_check(check.clone())
            .kill_grace_period(7.5)
            .build(&mut room)
            .unwrap();
        let container = info.container.unwrap();
        assert_eq!(container.r#type, pb::container_info::Type::Docker as i32);
        assert_eq!(container.image.unwrap().name, "busybox");
        assert_eq!(container.volumes, [volume]);
        assert_eq!(info.health_check, Some(check));
        assert_eq!(info.kill_policy.unwrap().grace_period_seconds, Some(7.5));
        assert_eq!(room.remaining().scalar("gpus"), 1.0);
        assert!(!room.fits(&task("u").gpus(2.0)));
    }
}
