//! Sampling: one thread per I2C bus reads its sensors in turn, each at its own interval, and
//! sends every result down its sensor's pipeline ([`pipeline`]).
//!
//! I2C is blocking, so each bus has a plain thread rather than an async task; a slow or hung
//! chip delays only its own bus. A thread sleeps until its next sensor is due (no polling),
//! missed ticks are skipped rather than piled up, a failing sensor backs off exponentially,
//! and the path from a read to the metrics does not allocate. A bus's thread can be stopped
//! and started again with other members (a reload); it hands its pipelines back, so the
//! sensors that stay keep their totals and their integration.

pub(crate) mod pipeline;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use self::pipeline::MAX_BACKOFF;
pub use self::pipeline::{pipelines, SensorPipeline};
use crate::config::{Config, SensorConfig};
use crate::sensor::{self, SensorError};

/// How often a read that finds no new conversion is retried before it counts as `stale`.
const NOT_READY_RETRIES: u8 = 3;
/// How late a bus thread may be before it counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(10);

/// Tells the bus threads to finish.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    /// Tell every thread holding a clone to finish.
    pub(crate) fn stop(&self) {
        let (flag, cvar) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
    }

    /// Sleep until `deadline`; true if told to stop meanwhile.
    fn wait_until(&self, deadline: Instant) -> bool {
        let (flag, cvar) = &*self.0;
        let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = cvar
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// When a bus thread promised to come around again (its next due read plus grace), and
/// whether it is still running.
struct Liveness {
    origin: Instant,
    deadline_ms: AtomicU64,
    running: AtomicBool,
}

impl Liveness {
    fn promise(&self, by: Instant) {
        let ms = by.saturating_duration_since(self.origin).as_millis() as u64;
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    fn alive(&self, now: Instant) -> bool {
        self.running.load(Ordering::Relaxed)
            && now.saturating_duration_since(self.origin).as_millis() as u64
                <= self.deadline_ms.load(Ordering::Relaxed)
    }
}

/// Whether sampling is alive, shareable with the HTTP server and the watchdog.
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<Mutex<BTreeMap<String, Arc<Liveness>>>>);

impl Health {
    /// Every bus thread is running and came around when it said it would.
    pub(crate) fn healthy(&self) -> bool {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .all(|l| l.alive(now))
    }
}

/// A sensor on a bus: its configuration and its pipeline.
pub(crate) type Member = (SensorConfig, SensorPipeline);

/// Someone to tell that a bus thread died, by the name of its bus.
pub(crate) type OnPanic = Arc<dyn Fn(String) + Send + Sync>;

/// One bus's thread.
struct Worker {
    stop: Stop,
    handle: JoinHandle<Vec<Member>>,
}

/// The running bus threads.
pub(crate) struct Sampler {
    on_panic: OnPanic,
    workers: BTreeMap<String, Worker>,
    health: Health,
    origin: Instant,
}

impl Sampler {
    /// No threads yet; `on_panic` hears of a bus thread that died.
    pub(crate) fn new(on_panic: OnPanic) -> Sampler {
        Sampler {
            on_panic,
            workers: BTreeMap::new(),
            health: Health::default(),
            origin: Instant::now(),
        }
    }

    /// Start a thread per bus of `config`; `pipelines` are in config order.
    pub(crate) fn start(
        config: &Config,
        pipelines: Vec<SensorPipeline>,
        on_panic: OnPanic,
    ) -> std::io::Result<Sampler> {
        let mut sampler = Sampler::new(on_panic);
        let mut buses: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
        for (config, pipeline) in config.sensors.iter().zip(pipelines) {
            buses
                .entry(config.bus.as_str())
                .or_default()
                .push((config.clone(), pipeline));
        }
        for (bus, members) in buses {
            sampler.start_bus(bus, members)?;
        }
        Ok(sampler)
    }

    /// Start sampling `members` on `bus` in a thread of its own. On failure the members are
    /// lost with the error: only the system refusing a thread does that.
    pub(crate) fn start_bus(&mut self, bus: &str, members: Vec<Member>) -> std::io::Result<()> {
        let live = Arc::new(Liveness {
            origin: self.origin,
            deadline_ms: AtomicU64::new(0),
            running: AtomicBool::new(true),
        });
        live.promise(Instant::now() + STALL_GRACE);
        let stop = Stop::default();
        let (thread_stop, thread_live, on_panic) =
            (stop.clone(), Arc::clone(&live), Arc::clone(&self.on_panic));
        let name = bus.to_string();
        // Thread names are at most 15 bytes, and a NUL would make spawn fail.
        let thread_name: String = format!("bus {bus}")
            .chars()
            .filter(|c| *c != '\0')
            .take(15)
            .collect();
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let run =
                    std::panic::AssertUnwindSafe(|| run_bus(members, &thread_stop, &thread_live));
                std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    thread_live.running.store(false, Ordering::Relaxed);
                    on_panic(name);
                    Vec::new()
                })
            })?;
        self.health
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bus.to_string(), live);
        self.workers
            .insert(bus.to_string(), Worker { stop, handle });
        Ok(())
    }

    /// Stop the thread of `bus` and take its members back (none if it was not running, or
    /// died). Afterwards their statuses hold their final totals.
    pub(crate) fn stop_bus(&mut self, bus: &str) -> Vec<Member> {
        self.health
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(bus);
        let Some(worker) = self.workers.remove(bus) else {
            return Vec::new();
        };
        worker.stop.stop();
        worker.handle.join().unwrap_or_else(|_| {
            log::error!("the sampling thread of bus {bus} ended in a panic");
            Vec::new()
        })
    }

    /// The buses being sampled.
    pub(crate) fn buses(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// Whether the threads sample on schedule, for `/healthz` and the watchdog.
    pub(crate) fn health(&self) -> Health {
        self.health.clone()
    }

    /// Ask every thread to finish and wait for them. Afterwards every sensor's status holds
    /// its final totals.
    pub(crate) fn stop(mut self) {
        for worker in self.workers.values() {
            worker.stop.stop();
        }
        for bus in self.buses() {
            self.stop_bus(&bus);
        }
    }
}

/// One bus's loop: read whatever is due, sleep until the next is; hand the members back when
/// told to stop.
fn run_bus(members: Vec<Member>, stop: &Stop, live: &Liveness) -> Vec<Member> {
    let (configs, mut pipelines): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let mut sensors = sensor::open_bus(&configs);
    let start = Instant::now();
    let mut tick = vec![start; sensors.len()];
    let mut due = vec![start; sensors.len()];
    let mut not_ready = vec![0u8; sensors.len()];
    loop {
        let now = Instant::now();
        for i in 0..sensors.len() {
            if due[i] > now {
                continue;
            }
            let result = sensors[i].read();
            let at = Instant::now();
            pipelines[i].record(&sensors[i].take_events());
            if matches!(result, Err(SensorError::NotReady)) && not_ready[i] < NOT_READY_RETRIES {
                // Right after (re)initialisation the first conversion is still running.
                not_ready[i] += 1;
                due[i] = at + pipelines[i].retry_delay();
                continue;
            }
            not_ready[i] = 0;
            pipelines[i].process(result, at, SystemTime::now());
            tick[i] = pipelines[i].next_tick(tick[i], at);
            due[i] = tick[i];
        }
        let next = due.iter().min().copied().unwrap_or(now + MAX_BACKOFF);
        live.promise(next + STALL_GRACE);
        if stop.wait_until(next) {
            break;
        }
    }
    configs.into_iter().zip(pipelines).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_interrupts_the_wait() {
        let stop = Stop::default();
        let other = stop.clone();
        let t =
            std::thread::spawn(move || other.wait_until(Instant::now() + Duration::from_secs(60)));
        stop.stop();
        assert!(t.join().unwrap());
    }
}
