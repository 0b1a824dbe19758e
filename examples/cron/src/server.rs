//! [`CronServer`]: one cron instance — its HTTP listener, leader election, scheduler
//! driver and controller — started and stopped together.
//!
//! Every instance serves the API. Instances of one framework (same name, same
//! masters) campaign for one state-store lease; the holder loads the state, runs
//! the controller and the scheduler driver; the others answer with the leader's
//! address. When leadership ends the controller and driver stop before anything
//! else can happen, and the instance goes back to campaigning.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agora_sdk::proto as pb;
use agora_sdk::{
    ChannelScheduler, DriverConfig, DriverEvent, LeaderElection, SchedulerDriver, StateStore,
};
use slog::{Logger, info, warn};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{ApiContext, ApiInfo};
use crate::config::CronConfig;
use crate::controller::{Command, Controller, ControllerHandle, Snapshot};
use crate::error::CronError;
use crate::state::store::CronStore;

/// The lease the instances of one apps framework compete for.
const LEADER_LEASE: &str = "leader";
/// Commands and driver events that may wait for the controller.
const CHANNEL_DEPTH: usize = 1024;
/// Pause between attempts to load the state while leading.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// Why an cron instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// A running cron instance.
pub struct CronServer {
    local_addr: SocketAddr,
    /// Set to true to stop everything.
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    leadership: JoinHandle<()>,
}

/// Where API commands go now: the controller's queue while leading, none otherwise.
type CommandRoute = Arc<Mutex<Option<mpsc::Sender<Command>>>>;

impl CronServer {
    /// Binds the listener and starts everything; returns once the API answers.
    pub async fn start(config: CronConfig, logger: Logger) -> Result<CronServer, StartError> {
        if config.masters.is_empty() {
            return Err(StartError::Config("no master addresses given".into()));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let store = StateStore::connect(config.masters.clone(), config.name.clone())
            .map_err(|e| StartError::Config(e.to_string()))?;
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (command_tx, command_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (stop, stop_rx) = watch::channel(false);
        let route: CommandRoute = Arc::new(Mutex::new(None));
        tokio::spawn(route_commands(command_rx, route.clone()));

        let handle = ControllerHandle::new(command_tx, snapshot_rx);
        let info = ApiInfo::new(&config, local_addr);
        let router = crate::api::router(ApiContext {
            controller: handle,
            info,
        });
        let http_stop = stop_rx.clone();
        let http_logger = logger.clone();
        let http = tokio::spawn(async move {
            let mut stop = http_stop;
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                crate::until(&mut stop, true).await;
            })
            .await;
            if let Err(e) = served {
                warn!(http_logger, "the cron API stopped"; "error" => %e);
            }
        });
        let advertised = agora_sdk::advertised_address(config.advertise.as_deref(), local_addr);
        let leadership = tokio::spawn(lead_when_elected(
            config,
            logger.clone(),
            store,
            snapshot_tx,
            route,
            advertised,
            stop_rx,
        ));
        info!(logger, "cron API listening"; "address" => %local_addr);
        Ok(CronServer {
            local_addr,
            stop,
            http,
            leadership,
        })
    }

    /// Where the REST API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and leaves the framework registered (its tasks keep running,
    /// and the next leader takes them over).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.leadership.await;
        let _ = self.http.await;
    }
}

/// Hands each API command to the controller when there is one, and answers it
/// with 503 when this instance does not lead.
async fn route_commands(mut commands: mpsc::Receiver<Command>, route: CommandRoute) {
    while let Some(command) = commands.recv().await {
        let target = route.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match target {
            Some(controller) => {
                if let Err(mpsc::error::SendError(command)) = controller.send(command).await {
                    command.refuse(CronError::Unavailable(
                        "leadership is changing; retry".into(),
                    ));
                }
            }
            None => command.refuse(CronError::Unavailable(
                "this cron instance is not the leader".into(),
            )),
        }
    }
}

/// Campaigns for leadership; while leading, runs the controller and the driver.
#[allow(clippy::too_many_arguments)]
async fn lead_when_elected(
    config: CronConfig,
    logger: Logger,
    store: StateStore,
    snapshot: watch::Sender<Arc<Snapshot>>,
    route: CommandRoute,
    advertised: String,
    mut stop: watch::Receiver<bool>,
) {
    let holder = format!("{advertised}/{}", uuid::Uuid::new_v4());
    let mut election = LeaderElection::campaign(
        store.clone(),
        LEADER_LEASE,
        holder.clone(),
        config.leader_lease,
    );
    let mut leadership = election.leadership();
    loop {
        // Standing by: show who leads, until this instance does.
        let mut follower_tick = tokio::time::interval(config.leader_lease / 3);
        loop {
            if *leadership.borrow() || *stop.borrow() {
                break;
            }
            let leader = match store.lease(LEADER_LEASE).await {
                Ok(Some(lease)) => lease.holder.split('/').next().map(str::to_string),
                _ => None,
            };
            snapshot.send_modify(|s| {
                let mut standby = Snapshot::clone(s);
                standby.is_leader = false;
                standby.leader = leader;
                *s = Arc::new(standby);
            });
            tokio::select! {
                _ = leadership.changed() => {}
                _ = follower_tick.tick() => {}
                _ = stop.changed() => {}
            }
        }
        if *stop.borrow() {
            break;
        }
        // Every write of this leadership carries its fence: once the lease passes
        // on, a write still in flight is refused rather than applied.
        let Some(fence) = election.fence() else {
            tokio::time::sleep(LOAD_RETRY).await;
            continue;
        };
        info!(logger, "leading: loading the cron state"; "epoch" => fence.epoch);
        let epoch = fence.epoch;
        let apps_store = CronStore::new(store.fenced(fence));
        let loaded = loop {
            match apps_store.load().await {
                Ok(loaded) => break Some(loaded),
                Err(e) => {
                    warn!(logger, "cannot load the cron state; retrying"; "error" => %e);
                    tokio::select! {
                        _ = tokio::time::sleep(LOAD_RETRY) => {}
                        _ = crate::until(&mut stop, true) => break None,
                        _ = crate::until(&mut leadership, false) => break None,
                    }
                }
            }
        };
        let Some(loaded) = loaded else {
            if *stop.borrow() {
                break;
            }
            continue;
        };
        let framework_id = loaded.framework_id.clone();
        let (command_tx, command_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (driver_tx, driver_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (controller_stop, controller_stop_rx) = watch::channel(false);
        let controller = Controller::new(
            config.clone(),
            logger.clone(),
            apps_store,
            snapshot.clone(),
            loaded,
            advertised.clone(),
        );
        let mut controller =
            tokio::spawn(controller.run(command_rx, driver_rx, controller_stop_rx));
        *route.lock().unwrap_or_else(PoisonError::into_inner) = Some(command_tx);
        let mut driver = start_driver(&config, &logger, framework_id, &advertised, driver_tx);

        // Lead until the lease is lost or the process stops — or the controller or
        // the driver ends on its own (a panic, the master refusing the framework):
        // then give the leadership up rather than hold it doing nothing.
        // Also when the lease is ours again under a new epoch (it lapsed between
        // two renewals): this leadership's fence is stale, so start a new one.
        let mut failed = false;
        let mut fence_check = tokio::time::interval(config.leader_lease / 3);
        loop {
            tokio::select! {
                _ = crate::until(&mut leadership, false) => {
                    warn!(logger, "lost the leadership: stopping the scheduler");
                    break;
                }
                _ = crate::until(&mut stop, true) => break,
                ended = &mut controller => {
                    warn!(logger, "the controller stopped; giving up the leadership"; "outcome" => ?ended.err());
                    failed = true;
                    break;
                }
                _ = &mut driver => {
                    warn!(logger, "the scheduler driver stopped; giving up the leadership");
                    failed = true;
                    break;
                }
                _ = fence_check.tick() => {
                    if election.fence().map(|f| f.epoch) != Some(epoch) {
                        warn!(logger, "the lease was granted again under a new epoch; restarting the leadership");
                        failed = true;
                        break;
                    }
                }
            }
        }
        *route.lock().unwrap_or_else(PoisonError::into_inner) = None;
        driver.abort();
        controller_stop.send_replace(true);
        let _ = (&mut controller).await;
        if *stop.borrow() {
            break;
        }
        if failed {
            if let Err(e) = election.resign().await {
                warn!(logger, "could not release the leadership"; "error" => %e);
            }
            // Let a standby take over first, then stand again.
            tokio::select! {
                _ = tokio::time::sleep(config.leader_lease) => {}
                // Already resigned: nothing left to release.
                _ = crate::until(&mut stop, true) => return,
            }
            election = LeaderElection::campaign(
                store.clone(),
                LEADER_LEASE,
                holder.clone(),
                config.leader_lease,
            );
            leadership = election.leadership();
        }
    }
    if let Err(e) = election.resign().await {
        warn!(logger, "could not release the leadership"; "error" => %e);
    }
}

fn start_driver(
    config: &CronConfig,
    logger: &Logger,
    framework_id: Option<String>,
    advertised: &str,
    events: mpsc::Sender<DriverEvent>,
) -> JoinHandle<()> {
    let info = pb::FrameworkInfo {
        name: config.name.clone(),
        id: framework_id.map(|value| pb::FrameworkId { value }),
        failover_timeout: config.failover_timeout.as_secs_f64(),
        checkpoint: true,
        roles: vec![config.role.clone()],
        hostname: agora_sdk::advertised_host(advertised).to_string(),
        webui_url: format!("http://{advertised}"),
        // TASK_UNREACHABLE rather than TASK_LOST for tasks of an agent that went
        // away: `unreachableStrategy` decides when they are replaced.
        capabilities: vec![pb::framework_info::Capability {
            r#type: pb::framework_info::capability::Type::PartitionAware as i32,
        }],
        ..Default::default()
    };
    let driver_config = DriverConfig::new(config.masters.clone(), info, logger.clone());
    let logger = logger.clone();
    tokio::spawn(async move {
        let driver = match SchedulerDriver::new(driver_config) {
            Ok(driver) => driver,
            Err(e) => {
                warn!(logger, "cannot start the scheduler driver"; "error" => %e);
                return;
            }
        };
        let mut scheduler = ChannelScheduler { events };
        if let Err(e) = driver.run(&mut scheduler).await {
            warn!(logger, "the scheduler driver stopped"; "error" => %e);
        }
    })
}
