//! Basic authentication against bcrypt hashes, the way the exporter-toolkit does it, and so
//! that no client without the password can lock out one with it.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10 on a Raspberry Pi), so:
//! - a check runs on a blocking thread, at most [`WORKERS`] at once, and at most [`QUEUE`]
//!   requests wait for one; past that a request is answered 503 at once rather than wait,
//!   so an attack costs neither threads nor memory, and a stop never waits for it;
//! - credentials that were verified are remembered (by a SHA-256 of user, hash and password,
//!   never the password itself): a scraper pays once, and then never queues. Failures are
//!   not remembered, so no number of wrong passwords can push a verified login out;
//! - an unknown user is checked against a decoy hash of the users' own cost, so the time a
//!   refusal takes does not tell whether the user exists.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// The salt and hash part of the decoy: any valid bcrypt text costs the same to check, and
/// no password gives this one.
const DECOY_TAIL: &str = "QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Verified credentials remembered at most (the oldest goes first).
const VERIFIED_ENTRIES: usize = 64;
/// bcrypt checks at once: each holds a blocking thread and a core.
pub(crate) const WORKERS: usize = 2;
/// Requests that may wait for a check; more are answered 503 at once.
const QUEUE: usize = 8;

/// The users and their bcrypt hashes, with the decoy for the ones that do not exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Users {
    hashes: BTreeMap<String, String>,
    decoy: String,
}

impl Users {
    /// `hashes` (user → bcrypt hash), which the caller has checked are bcrypt hashes. The
    /// decoy has the highest cost among them: with one cost for all (the usual case) an
    /// unknown user costs exactly what a wrong password does.
    pub(crate) fn new(hashes: BTreeMap<String, String>) -> Users {
        let cost = hashes
            .values()
            .filter_map(|h| bcrypt::HashParts::from_str(h).ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(10);
        Users {
            decoy: format!("$2y${cost:02}${DECOY_TAIL}"),
            hashes,
        }
    }

    /// No users: no authentication.
    pub(crate) fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The users' names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.hashes.keys()
    }

    #[cfg(test)]
    pub(crate) fn hash(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }
}

/// What a request's credentials come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A user with the right password.
    Allowed,
    /// No credentials, an unknown user or a wrong password.
    Refused,
    /// Too many password checks wait already; try again shortly.
    Busy,
}

/// The checker, shared by every connection.
pub(crate) struct Auth {
    verified: Mutex<VecDeque<[u8; 32]>>,
    workers: Arc<Semaphore>,
    /// Checks running or waiting for a worker.
    pending: Arc<AtomicUsize>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_ENTRIES)),
            workers: Arc::new(Semaphore::new(WORKERS)),
            pending: Arc::default(),
        }
    }
}

/// User and password of a `Basic` Authorization header.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// One place in the queue of checks, given back when dropped (also when the request that
/// held it goes away while it waits).
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Auth {
    /// What `header` comes to against `users`.
    pub(crate) async fn check(&self, users: &Users, header: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = header.and_then(credentials) else {
            return Verdict::Refused;
        };
        let (hash, known) = match users.hashes.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (users.decoy.clone(), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if self.verified().contains(&key) {
            return Verdict::Allowed;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= WORKERS + QUEUE {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Verdict::Busy;
        }
        let place = Pending(Arc::clone(&self.pending));
        let Ok(worker) = Arc::clone(&self.workers).acquire_owned().await else {
            return Verdict::Refused;
        };
        // The worker and the place go with the check: they are given back when bcrypt is
        // done, even if the request has gone away meanwhile.
        let valid = tokio::task::spawn_blocking(move || {
            let _held = (worker, place);
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !(valid && known) {
            return Verdict::Refused;
        }
        let mut verified = self.verified();
        if !verified.contains(&key) {
            if verified.len() >= VERIFIED_ENTRIES {
                verified.pop_front();
            }
            verified.push_back(key);
        }
        Verdict::Allowed
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, VecDeque<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn users(cost: u32) -> Users {
        let mut hashes = BTreeMap::new();
        hashes.insert(
            "prometheus".to_string(),
            bcrypt::hash("secret", cost).unwrap(),
        );
        Users::new(hashes)
    }

    #[tokio::test]
    async fn the_right_password_and_nothing_else() {
        let users = users(4);
        let auth = Auth::default();
        let check = |header: Option<HeaderValue>| {
            let (auth, users) = (&auth, &users);
            async move { auth.check(users, header.as_ref()).await }
        };
        assert_eq!(
            check(Some(basic("prometheus", "secret"))).await,
            Verdict::Allowed
        );
        // Remembered: the second check takes no bcrypt.
        assert_eq!(
            check(Some(basic("prometheus", "secret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            check(Some(basic("prometheus", "wrong"))).await,
            Verdict::Refused
        );
        assert_eq!(
            check(Some(basic("nobody", "fakepassword"))).await,
            Verdict::Refused
        );
        assert_eq!(check(None).await, Verdict::Refused);
        assert_eq!(
            check(Some(HeaderValue::from_static("Basic !!!"))).await,
            Verdict::Refused
        );
        assert_eq!(
            check(Some(HeaderValue::from_static("Bearer x"))).await,
            Verdict::Refused
        );
        // Only the verified login is remembered.
        assert_eq!(auth.verified().len(), 1);
        assert_eq!(auth.pending.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn wrong_passwords_never_evict_a_verified_login() {
        let users = users(4);
        let auth = Auth::default();
        let right = basic("prometheus", "secret");
        assert_eq!(auth.check(&users, Some(&right)).await, Verdict::Allowed);
        for i in 0..3 * VERIFIED_ENTRIES {
            let wrong = basic(
                if i % 2 == 0 { "prometheus" } else { "mallory" },
                &i.to_string(),
            );
            assert_eq!(auth.check(&users, Some(&wrong)).await, Verdict::Refused);
        }
        assert_eq!(auth.verified().len(), 1);
        // Found without a bcrypt: it answers even with every worker taken.
        let _taken = Arc::clone(&auth.workers)
            .acquire_many_owned(WORKERS as u32)
            .await;
        assert_eq!(auth.check(&users, Some(&right)).await, Verdict::Allowed);
    }

    #[tokio::test]
    async fn past_the_queue_a_check_is_busy_at_once() {
        let users = users(4);
        let auth = Auth::default();
        // Every worker taken: checks queue up to the limit, the next is turned away.
        let taken = Arc::clone(&auth.workers)
            .acquire_many_owned(WORKERS as u32)
            .await
            .unwrap();
        let waiting: Vec<_> = (0..WORKERS + QUEUE)
            .map(|i| {
                let (auth, users) = (&auth, &users);
                async move { auth.check(users, Some(&basic("x", &i.to_string()))).await }
            })
            .collect();
        let mut waiting: Vec<_> = waiting.into_iter().map(Box::pin).collect();
        for w in &mut waiting {
            // Polled once: each takes its place in the queue and waits for a worker.
            assert!(futures_poll_once(w.as_mut()).await.is_none());
        }
        assert_eq!(
            auth.check(&users, Some(&basic("prometheus", "secret")))
                .await,
            Verdict::Busy
        );
        // A request that goes away gives its place back.
        waiting.pop();
        assert_eq!(auth.pending.load(Ordering::Acquire), WORKERS + QUEUE - 1);
        drop(taken);
        for w in waiting {
            assert_eq!(w.await, Verdict::Refused);
        }
        assert_eq!(auth.pending.load(Ordering::Acquire), 0);
        assert_eq!(
            auth.check(&users, Some(&basic("prometheus", "secret")))
                .await,
            Verdict::Allowed
        );
    }

    /// Poll `future` once: its output if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[test]
    fn the_decoy_costs_what_the_users_cost() {
        for cost in [4, 10, 12] {
            let mut hashes = BTreeMap::new();
            hashes.insert("a".to_string(), format!("$2y${cost:02}${DECOY_TAIL}"));
            hashes.insert("b".to_string(), format!("$2y$04${DECOY_TAIL}"));
            let decoy = bcrypt::HashParts::from_str(&Users::new(hashes).decoy).unwrap();
            assert_eq!(decoy.get_cost(), cost);
        }
        // A valid hash that no password matches.
        let users = users(4);
        assert!(!bcrypt::verify("secret", &users.decoy).unwrap());
        assert!(Users::new(BTreeMap::new()).is_empty());
    }
}
