//! [`LeaderElection`]: one leader among a framework's instances, built on a
//! state-store lease, so a framework can run hot standbys.
//!
//! Every instance campaigns for the same lease name under its own holder id. The one
//! granted the lease leads, and renews it every `ttl / 3`; the others retry at the
//! same pace and take over once the lease is released or expires.
//!
//! # When an instance stops leading
//! Leadership is published through a [`watch`] channel and turns `false` before the
//! lease can pass to anyone else:
//! - a renewal that fails, is refused, or whose outcome is unknown: the instance
//!   steps down at once (a renewal is bounded to `ttl / 3`, so this happens at most
//!   `2 · ttl / 3` after the last renewal was sent, while the lease still runs);
//! - a renewal that finds the lease held by someone else;
//! - [`LeaderElection::resign`], or dropping the election: it steps down, then
//!   releases the lease so a standby takes over without waiting for the ttl.
//!
//! The lease's expiry starts on the master when it applies the grant, which is after
//! the request was sent; so measuring from the send time, as the campaign does, never
//! overestimates how long the lease lasts.
//!
//! # Fencing
//! Stepping down is prompt but not instant: a deposed leader may still have writes in
//! flight when its successor starts. While leading, [`LeaderElection::fence`] gives
//! the lease's holder and epoch; writes through
//! [`StateStore::fenced`](crate::StateStore::fenced) with it are refused by the
//! master ([`StateStoreError::Fenced`]) once the lease has expired or passed to
//! another instance, so a deposed leader cannot overwrite its successor's state.
//!
//! ```no_run
//! use std::time::Duration;
//! use agora_sdk::{LeaderElection, StateStore};
//!
//! # async fn example() -> Result<(), agora_sdk::StateStoreError> {
//! let store = StateStore::connect(vec!["10.0.0.1:5050".into()], "cron")?;
//! let election =
//!     LeaderElection::campaign(store.clone(), "scheduler", "host-a/4242", Duration::from_secs(15));
//! let mut leadership = election.leadership();
//! loop {
//!     // Stand by until this instance leads...
//!     if leadership.wait_for(|leading| *leading).await.is_err() {
//!         break; // the campaign ended (see `resign` for why)
//!     }
//!     // ...then work until it no longer does (run the scheduler in a task and
//!     // abort it here), writing only through the fenced client.
//!     if let Some(fence) = election.fence() {
//!         let writes = store.fenced(fence);
//!         writes.put("state/owner", "host-a/4242").await?;
//!     }
//!     if leadership.wait_for(|leading| !*leading).await.is_err() {
//!         break;
//!     }
//! }
//! election.resign().await
//! # }
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::state_store::{Fence, LeaseOutcome, StateStore, StateStoreError};

/// Shortest pause between two attempts, whatever the ttl: a ttl the master refuses
/// must not turn the campaign into a busy loop.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A running campaign for one lease. Dropping it resigns.
pub struct LeaderElection {
    /// True while this instance holds the lease and its last renewal is recent
    /// enough that the lease cannot have passed to anyone else.
    leading: watch::Receiver<bool>,
    /// The lease's holder and epoch while leading, `None` otherwise. Set before
    /// `leading` turns true and cleared after it turns false, so it is `Some` whenever
    /// `leading` is true.
    fence: watch::Receiver<Option<Fence>>,
    /// Set to true (or dropped) to end the campaign.
    resign: watch::Sender<bool>,
    /// The campaign; ends after a resignation, or with an error that retrying cannot
    /// fix (an invalid name, holder or ttl).
    task: JoinHandle<Result<(), StateStoreError>>,
}

impl LeaderElection {
    /// Starts campaigning for lease `name` as `holder` (unique per instance, e.g. a
    /// host name and a process id). The lease lasts `ttl` (1 s to 1 h) and is renewed
    /// every `ttl / 3`. Must be called within a Tokio runtime: it spawns the campaign.
    pub fn campaign(
        store: StateStore,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> LeaderElection {
        let (leading_tx, leading) = watch::channel(false);
        let (fence_tx, fence) = watch::channel(None);
        let (resign, resign_rx) = watch::channel(false);
        let campaign = Campaign {
            store,
            name: name.into(),
            holder: holder.into(),
            ttl,
            leading: leading_tx,
            fence: fence_tx,
        };
        let task = tokio::spawn(campaign.run(resign_rx));
        LeaderElection {
            leading,
            fence,
            resign,
            task,
        }
    }

    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// While this instance leads, the fence of its lease (name, this holder, the
    /// epoch it was granted at), for [`StateStore::fenced`]; `None` otherwise.
    pub fn fence(&self) -> Option<Fence> {
        if self.is_leader() {
            self.fence.borrow().clone()
        } else {
            None
        }
    }

    /// Leadership as it changes: `true` when this instance starts leading, `false`
    /// when it steps down. `wait_for(|leading| *leading)` waits to lead.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Whether the campaign has ended (only after an error that retrying cannot fix,
    /// unless it resigned); [`resign`](Self::resign) then returns that error.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops campaigning: steps down, then releases the lease so a standby can take
    /// over at once. Returns the release's error, or the error that ended the
    /// campaign earlier. If the release fails the lease simply expires after its ttl.
    pub async fn resign(self) -> Result<(), StateStoreError> {
        self.resign.send_replace(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(StateStoreError::CampaignAborted(e.to_string())),
        }
    }
}

/// The campaign task's state.
struct Campaign {
    store: StateStore,
    name: String,
    holder: String,
    ttl: Duration,
    /// Published leadership; only this task writes it.
    leading: watch::Sender<bool>,
    /// Published fence: see [`LeaderElection::fence`]. Only this task writes it.
    fence: watch::Sender<Option<Fence>>,
}

impl Campaign {
    async fn run(self, mut resign: watch::Receiver<bool>) -> Result<(), StateStoreError> {
        let interval = (self.ttl / 3).max(MIN_RETRY_INTERVAL);
        loop {
            let sent_at = Instant::now();
            // Bounded to one interval so a failed renewal is known before the lease
            // (which runs at least `ttl` from `sent_at`) can expire.
            let attempt = tokio::select! {
                _ = resigned(&mut resign) => break,
                attempt = tokio::time::timeout(
                    interval,
                    self.store.acquire_lease(&self.name, &self.holder, self.ttl),
                ) => attempt,
            };
            match attempt {
                Ok(Ok(LeaseOutcome::Granted(lease))) => self.lead(Fence::from(&lease)),
                Ok(Ok(LeaseOutcome::HeldByOther(_))) => self.step_down(),
                Ok(Err(e)) if is_permanent(&e) => {
                    self.step_down();
                    return Err(e);
                }
                Ok(Err(_)) | Err(_) => self.step_down(),
            }
            tokio::select! {
                _ = resigned(&mut resign) => break,
                _ = tokio::time::sleep_until(sent_at + interval) => {}
            }
        }
        // Stop acting as leader before anyone else can become one.
        self.step_down();
        self.store
            .release_lease(&self.name, &self.holder)
            .await
            .map(|_released| ())
    }

    /// Publishes leadership under `fence`: the fence first, so that whoever sees
    /// `leading` true finds it.
    fn lead(&self, fence: Fence) {
        // Another epoch means the lease changed hands since it was last granted here:
        // a leadership of its own, so end the previous one first.
        // (The borrow ends before step_down writes the channel.)
        let new_epoch = self
            .fence
            .borrow()
            .as_ref()
            .is_some_and(|current| *current != fence);
        if new_epoch {
            self.step_down();
        }
        self.fence.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&fence);
            *current = Some(fence);
            changed
        });
        self.set_leading(true);
    }

    /// Publishes the end of leadership: `leading` first, then the fence.
    fn step_down(&self) {
        self.set_leading(false);
        self.fence
            .send_if_modified(|current| current.take().is_some());
    }

    fn set_leading(&self, leading: bool) {
        self.leading.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }
}

/// Resolves once the election asks to resign, or is dropped.
async fn resigned(resign: &mut watch::Receiver<bool>) {
    let _ = resign.wait_for(|resigned| *resigned).await;
}

/// Errors no later attempt can fix: the request itself is wrong.
fn is_permanent(error: &StateStoreError) -> bool {
    matches!(
        error,
        StateStoreError::Config(_) | StateStoreError::Invalid(_)
    )
}

/// The `host:port` an instance of an HA framework is reached at, as its standbys
/// name it to clients (the lease holder) and as the masters show it (the framework's
/// `webui_url`): `advertise` as given when it has a port, `advertise` with the
/// bound port when it is a host alone (an IPv6 host in brackets), else `bound`
/// itself.
pub fn advertised_address(advertise: Option<&str>, bound: std::net::SocketAddr) -> String {
    match advertise.map(str::trim).filter(|a| !a.is_empty()) {
        None => bound.to_string(),
        Some(address) if has_port(address) => address.to_string(),
        Some(host) => format!("{host}:{}", bound.port()),
    }
}

/// The host part of an [`advertised_address`], for the framework's `hostname`.
pub fn advertised_host(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// Whether `address` ends with `:<port>` (and is not a bracketed IPv6 host alone).
fn has_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

#[cfg(test)]
mod advertised_address_tests {
    use super::{advertised_address, advertised_host};

    #[test]
    fn a_host_takes_the_bound_port_and_a_host_with_a_port_stays() {
        let bound: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        assert_eq!(advertised_address(None, bound), "0.0.0.0:8080");
        assert_eq!(advertised_address(Some(" "), bound), "0.0.0.0:8080");
        assert_eq!(advertised_address(Some("apps-1"), bound), "apps-1:8080");
        assert_eq!(advertised_address(Some("apps-1:80"), bound), "apps-1:80");
        assert_eq!(
            advertised_address(Some("[fe80::1]"), bound),
            "[fe80::1]:8080"
        );
        assert_eq!(
            advertised_address(Some("[fe80::1]:80"), bound),
            "[fe80::1]:80"
        );
        assert_eq!(advertised_address(Some("fe80::1"), bound), "fe80::1:8080");
        assert_eq!(advertised_host("apps-1:8080"), "apps-1");
        assert_eq!(advertised_host("[fe80::1]:80"), "[fe80::1]");
    }
}
