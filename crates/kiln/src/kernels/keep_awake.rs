//! Keeps the pool's idle workers polling for work while a training loop runs.
//!
//! An idle rayon worker spins for a few dozen µs, then sleeps on a futex, and the next
//! parallel loop must wake it: a system call for the waker and, on these virtual machines,
//! tens of µs before the sleeper runs again, while the loop's other half waits for it. A
//! training step forks and joins several times with short serial stretches in between (the
//! batch gather, the loss, small ops), each long enough for the peer to fall asleep.
//!
//! Measured with `kiln-bench steps` (the reference MLP, 2,020 steps): 2.2–2.8K context
//! switches and 386–429 µs per step as rayon leaves it; 85–98 switches and 369–386 µs with
//! the peer kept polling. With a 20 µs serial pause per step standing in for the batch
//! gather, 461–536 µs against 390–418.
//!
//! A polling worker still runs every job it finds (it steals through
//! [`rayon::yield_now`]), and between polls it gives its core away with
//! [`std::thread::yield_now`], so another process that needs the core gets it.
//!
//! A poller is a rayon job, so a worker waiting inside some other job (a second training
//! sharing the pool) may pick it up, and that other job then waits under it. So a poller
//! also ends after [`IDLE_EXIT`] without work: at the latest at the training's next pause
//! (the end of an epoch), and [`KeepAwake::rearm`] starts a fresh one when it goes on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While alive, the pool's other workers poll for work instead of sleeping. Inert when
/// created off the pool or on a one-thread pool.
#[must_use = "the workers poll only while the guard lives"]
pub struct KeepAwake {
    state: Arc<State>,
}

struct State {
    stop: AtomicBool,
    /// Pollers spawned and not yet finished (queued or running).
    spawned: AtomicUsize,
    /// Pollers running now.
    polling: AtomicUsize,
    spawner: usize,
    peers: usize,
    idle_exit: Duration,
}

/// A poller that finds no work for this long ends: training has paused (validation on one
/// thread, a checkpoint being written), and the worker may be wanted under it.
const IDLE_EXIT: Duration = Duration::from_millis(1);

/// How long [`KeepAwake::start`] waits for its pollers to be picked up: busy workers (a
/// test harness running several trainings in one pool) may not take them at once, and
/// training should not wait for that.
const PICKUP_WAIT: Duration = Duration::from_millis(2);

impl KeepAwake {
    /// Hands one polling job to each other worker of the current pool.
    pub fn start() -> KeepAwake {
        Self::start_with(IDLE_EXIT)
    }

    fn start_with(idle_exit: Duration) -> KeepAwake {
        let peers = rayon::current_num_threads().saturating_sub(1);
        let spawner = rayon::current_thread_index();
        let state = Arc::new(State {
            stop: AtomicBool::new(false),
            spawned: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            spawner: spawner.unwrap_or(usize::MAX),
            peers: if spawner.is_some() { peers } else { 0 },
            idle_exit,
        });
        let awake = KeepAwake { state };
        awake.rearm();
        // Spin on the counter (not in a rayon wait, where this thread could pick up a
        // poller itself) until the peers have taken their pollers.
        let start = Instant::now();
        while awake.polling() < awake.state.peers && start.elapsed() < PICKUP_WAIT {
            std::hint::spin_loop();
        }
        awake
    }

    /// Spawns pollers for the peers whose poller has ended (after a pause), without
    /// waiting for them to start.
    pub fn rearm(&self) {
        while self.state.spawned.load(Ordering::Acquire) < self.state.peers {
            self.state.spawned.fetch_add(1, Ordering::AcqRel);
            let state = Arc::clone(&self.state);
            rayon::spawn(move || {
                poll_until_stopped(&state);
                state.spawned.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// How many workers are polling now.
    pub fn polling(&self) -> usize {
        self.state.polling.load(Ordering::Acquire)
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
    }
}

/// Runs whatever work appears until `stop`, or until none has appeared for `idle_exit`.
/// A poller that the spawning thread picked up itself (while waiting in a join) returns at
/// once: that thread has its own loop to run.
fn poll_until_stopped(state: &State) {
    if rayon::current_thread_index() == Some(state.spawner) {
        return;
    }
    state.polling.fetch_add(1, Ordering::AcqRel);
    let mut last_work = Instant::now();
    while !state.stop.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_work = Instant::now(),
            _ if last_work.elapsed() >= state.idle_exit => break,
            _ => std::thread::yield_now(),
        }
    }
    state.polling.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Waits (up to 10 s) until `done`, re-arming meanwhile if `rearm`.
    fn wait_for(awake: &KeepAwake, rearm: bool, done: impl Fn(&KeepAwake) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(awake) && Instant::now() < deadline {
            if rearm {
                awake.rearm();
            }
            std::thread::yield_now();
        }
        done(awake)
    }

    /// The peers poll while the guard lives, still run the spawner's parallel work, and
    /// stop when it drops (with an idle exit too long to be what ends them).
    #[test]
    fn peers_poll_run_work_and_stop_when_dropped() {
        pool(3).install(|| {
            let awake = KeepAwake::start_with(Duration::from_secs(3600));
            assert!(wait_for(&awake, false, |a| a.polling() == 2), "both peers poll");
            let sum: u64 = (0..100_000u64).into_par_iter().map(|v| v * 2).sum();
            assert_eq!(sum, 99_999 * 100_000);
            let state = Arc::clone(&awake.state);
            drop(awake);
            let deadline = Instant::now() + Duration::from_secs(10);
            while state.spawned.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            assert_eq!(state.spawned.load(Ordering::Acquire), 0, "the pollers stopped");
        });
    }

    /// Pollers that find no work end by themselves; `rearm` starts them again.
    #[test]
    fn idle_pollers_end_and_rearm_restarts_them() {
        pool(3).install(|| {
            let idle_exit = Duration::from_millis(50);
            let awake = KeepAwake::start_with(idle_exit);
            std::thread::sleep(idle_exit * 4);
            let ended = |a: &KeepAwake| a.state.spawned.load(Ordering::Acquire) == 0;
            assert!(wait_for(&awake, false, ended), "idle pollers ended");
            assert!(
                wait_for(&awake, true, |a| a.polling() == 2),
                "re-armed pollers poll"
            );
        });
    }

    #[test]
    fn inert_off_the_pool_and_on_one_thread() {
        assert_eq!(KeepAwake::start().polling(), 0);
        pool(1).install(|| assert_eq!(KeepAwake::start().polling(), 0));
    }
}
