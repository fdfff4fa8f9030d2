//! The stop token: one flag that, once set, stays set, wakes every sleeper
//! at once and shuts down every HTTP client registered with it (which breaks
//! off blocked connects and reads). Ctrl+C and SIGTERM set the process's
//! token; a run sets its own at the deadline. Every blocking wait in trie
//! (sleeps, backoffs, HTTP calls, waiting for a FIFO's reader) watches one,
//! so a stop takes effect in milliseconds in every phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

struct Inner {
    set: AtomicBool,
    /// Dropped when the token is set: every receiver wakes with a disconnect.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    /// What to call when the token is set (shut HTTP clients down).
    hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// Tokens set together with this one (a run's token follows the
    /// process's interrupt).
    followers: Mutex<Vec<Stop>>,
}

/// A cheap-to-clone stop token.
#[derive(Clone)]
pub struct Stop(Arc<Inner>);

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stop({})", self.is_set())
    }
}

impl Stop {
    /// A token that is not set.
    pub fn new() -> Stop {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Stop(Arc::new(Inner {
            set: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
            hooks: Mutex::new(Vec::new()),
            followers: Mutex::new(Vec::new()),
        }))
    }

    /// Set the token: wake every sleeper, call every hook (shutting HTTP clients down),
    /// set every follower. Idempotent.
    pub fn trigger(&self) {
        if self.0.set.swap(true, Ordering::SeqCst) {
            return;
        }
        self.0.tx.lock().take();
        let hooks = std::mem::take(&mut *self.0.hooks.lock());
        for h in hooks {
            h();
        }
        let followers = std::mem::take(&mut *self.0.followers.lock());
        for f in followers {
            f.trigger();
        }
    }

    /// Whether the token is set.
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// A receiver that disconnects when the token is set (for `select!`).
    pub fn receiver(&self) -> &Receiver<()> {
        &self.0.rx
    }

    /// Sleep for `d`; `false` when the token was set meanwhile (or before).
    pub fn sleep(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.is_set();
        }
        match Instant::now().checked_add(d) {
            Some(at) => self.sleep_until(at),
            None => {
                let _ = self.0.rx.recv();
                false
            }
        }
    }

    /// Sleep until `at`; `false` when the token was set meanwhile (or before).
    pub fn sleep_until(&self, at: Instant) -> bool {
        if self.is_set() {
            return false;
        }
        matches!(self.0.rx.recv_deadline(at), Err(RecvTimeoutError::Timeout)) && !self.is_set()
    }

    /// Shut `agent` down when the token is set (at once if it already is).
    pub fn watch(&self, agent: &ureq::Agent) {
        let agent = agent.clone();
        self.on_stop(move || agent.shutdown());
    }

    /// Call `hook` when the token is set (at once if it already is): how
    /// HTTP clients are shut down.
    pub fn on_stop(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.0.hooks.lock();
        if self.is_set() {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }

    /// Set `other` whenever this token is set (at once if it already is).
    pub fn forward_to(&self, other: &Stop) {
        let mut followers = self.0.followers.lock();
        if self.is_set() {
            drop(followers);
            other.trigger();
        } else {
            followers.push(other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_token_wakes_sleepers_and_followers() {
        let stop = Stop::new();
        let run = Stop::new();
        stop.forward_to(&run);
        let sleeper = {
            let run = run.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (run.sleep(Duration::from_secs(30)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.trigger();
        let (slept, took) = sleeper.join().unwrap();
        assert!(!slept && took < Duration::from_secs(5), "{took:?}");
        assert!(run.is_set());
        assert!(!run.sleep(Duration::from_secs(30)));
        // A late follower is set at once; an overlong sleep does not overflow.
        let late = Stop::new();
        stop.forward_to(&late);
        assert!(late.is_set());
        assert!(!late.sleep(Duration::MAX));
        assert!(Stop::new().sleep(Duration::from_millis(1)));
    }
}
