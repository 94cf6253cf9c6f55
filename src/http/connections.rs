//! How many connections the server holds, and which one gives way when it is full.
//!
//! The cap follows the process's file limit (raised from its soft to its hard value at start,
//! as the Go runtime does for node_exporter), less what the daemon needs for itself, and at
//! most [`MAX_CONNECTIONS`]. When a connection arrives at the cap, the server closes one that
//! is waiting (for its first request or, kept alive, for its next one) rather than turn the
//! newcomer away: among the waiting, one of the peer that holds the most connections, the one
//! waiting longest. A scraper with its one or two connections keeps them while someone else's
//! hundreds of idle or half-sent ones go first. Only when every connection is busy serving a
//! request is the newcomer closed, with a warning at most once a minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

/// The most connections held at once, whatever the file limit.
pub(crate) const MAX_CONNECTIONS: usize = 2048;
/// File descriptors kept for the daemon itself: I2C buses, the state files, the journal.
const RESERVED_FDS: libc::rlim_t = 64;
/// The fewest connections, whatever the file limit.
const MIN_CONNECTIONS: usize = 16;
/// How often a refused connection may be logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Raise the soft file limit to the hard one and return the cap on connections it allows.
pub(crate) fn cap_from_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return MIN_CONNECTIONS;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit; raising the soft limit to the hard one needs no
        // privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let usable = limit.rlim_cur.saturating_sub(RESERVED_FDS);
    usize::try_from(usable)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// One connection's place in the table.
struct Entry {
    peer: IpAddr,
    /// Serving a request now.
    busy: bool,
    /// Since when it has been waiting (accepted, or its last response sent).
    since: Instant,
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&entry.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }

    /// The waiting connection that gives way: its peer holds the most connections, and among
    /// those it has waited longest.
    fn victim(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.busy)
            .max_by_key(|(_, e)| {
                (
                    self.per_peer.get(&e.peer).copied().unwrap_or(0),
                    std::cmp::Reverse(e.since),
                )
            })
            .map(|(id, _)| *id)
    }
}

/// The connections of every listener.
pub(crate) struct Connections {
    cap: usize,
    table: Mutex<Table>,
    refused: AtomicU64,
    evicted: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// A connection's hold on its place; dropping it frees the place.
pub(crate) struct Place {
    id: u64,
    connections: Arc<Connections>,
}

impl Connections {
    /// A table for at most `cap` connections.
    pub(crate) fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            table: Mutex::new(Table::default()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cap.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    #[cfg(test)]
    /// Connections held now.
    pub(crate) fn len(&self) -> usize {
        self.table().entries.len()
    }

    #[cfg(test)]
    /// Whether no connection is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    /// Connections closed to make room, and newcomers closed for lack of it, so far.
    pub(crate) fn pressure(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Close the waiting connection that gives way first; false if none is waiting.
    pub(crate) fn evict_one(&self) -> bool {
        let mut table = self.table();
        let Some(victim) = table.victim() else {
            return false;
        };
        if let Some(abort) = table.remove(victim).and_then(|e| e.abort) {
            abort.abort();
        }
        self.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A place for a connection from `peer`, and whether another gave way for it; `None` if
    /// every place is taken by a connection serving a request.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<(Place, bool)> {
        let full = self.table().entries.len() >= self.cap;
        if full && !self.evict_one() {
            self.refuse(peer);
            return None;
        }
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(
            id,
            Entry {
                peer,
                busy: false,
                since: Instant::now(),
                abort: None,
            },
        );
        *table.per_peer.entry(peer).or_default() += 1;
        Some((
            Place {
                id,
                connections: Arc::clone(self),
            },
            full,
        ))
    }

    fn refuse(&self, peer: IpAddr) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            log::warn!(
                "all {} connections are serving requests; closed a new one from {peer} ({refused} refused so far)",
                self.cap
            );
        }
    }
}

impl Place {
    /// How to close the connection if it must give way.
    pub(crate) fn set_abort(&self, abort: AbortHandle) {
        if let Some(entry) = self.connections.table().entries.get_mut(&self.id) {
            entry.abort = Some(abort);
        }
    }

    /// A request is being served: the connection does not give way meanwhile.
    pub(crate) fn busy(&self) {
        if let Some(entry) = self.connections.table().entries.get_mut(&self.id) {
            entry.busy = true;
        }
    }

    /// The response is out: the connection waits again, from now.
    pub(crate) fn idle(&self) {
        if let Some(entry) = self.connections.table().entries.get_mut(&self.id) {
            entry.busy = false;
            entry.since = Instant::now();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.table().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_crowding_peer_gives_way_first() {
        let c = Connections::new(4);
        let scraper = c.admit(ip(1)).unwrap().0;
        let _a = c.admit(ip(2)).unwrap().0;
        let _b = c.admit(ip(2)).unwrap().0;
        let _c = c.admit(ip(2)).unwrap().0;
        assert_eq!(c.len(), 4);
        // Full: a newcomer takes the place of one of ip 2's, not the scraper's.
        let _d = c.admit(ip(3)).unwrap().0;
        assert_eq!(c.len(), 4);
        assert!(c.table().entries.contains_key(&scraper.id));
        assert_eq!(c.table().per_peer[&ip(2)], 2);
        assert_eq!(c.pressure(), (1, 0));
    }

    #[test]
    fn the_longest_waiting_gives_way_among_equals() {
        let c = Connections::new(2);
        let old = c.admit(ip(1)).unwrap().0;
        std::thread::sleep(Duration::from_millis(2));
        let young = c.admit(ip(2)).unwrap().0;
        let _new = c.admit(ip(3)).unwrap().0;
        assert!(!c.table().entries.contains_key(&old.id));
        assert!(c.table().entries.contains_key(&young.id));
    }

    #[test]
    fn busy_connections_are_never_closed_and_a_full_house_refuses() {
        let c = Connections::new(2);
        let a = c.admit(ip(1)).unwrap().0;
        let b = c.admit(ip(1)).unwrap().0;
        a.busy();
        b.busy();
        assert!(c.admit(ip(2)).is_none());
        assert_eq!(c.pressure(), (0, 1));
        b.idle();
        assert!(c.admit(ip(2)).is_some());
    }

    #[test]
    fn a_dropped_place_is_freed() {
        let c = Connections::new(2);
        let a = c.admit(ip(1)).unwrap().0;
        drop(a);
        assert!(c.is_empty());
        assert!(c.table().per_peer.is_empty());
    }

    #[test]
    fn the_cap_follows_the_file_limit() {
        let cap = cap_from_file_limit();
        assert!((MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&cap));
    }
}
