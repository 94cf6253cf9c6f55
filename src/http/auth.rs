//! Basic authentication against bcrypt hashes, the way the exporter-toolkit does it.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10 on a Raspberry Pi), so a check
//! runs on a blocking thread, one at a time, and its result is remembered for the same user,
//! hash and password (by a SHA-256 of the three, never the password itself): a scraper pays
//! once. An unknown user is checked against a decoy hash, so the time a refusal takes does
//! not tell whether the user exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};

/// bcrypt of "fakepassword" at cost 10: what an unknown user's password is checked against.
const DECOY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Results remembered at most; the memory is emptied when full.
const CACHE_ENTRIES: usize = 256;

/// The checker, shared by every connection.
#[derive(Default)]
pub(crate) struct Auth {
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// One bcrypt at a time.
    bcrypt: Arc<Mutex<()>>,
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

impl Auth {
    /// Whether `header` authenticates one of `users`.
    pub(crate) async fn check(
        &self,
        users: &BTreeMap<String, String>,
        header: Option<&HeaderValue>,
    ) -> bool {
        let Some((user, password)) = header.and_then(credentials) else {
            return false;
        };
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (DECOY_HASH.to_string(), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        let valid = match cached {
            Some(valid) => valid,
            None => {
                let gate = Arc::clone(&self.bcrypt);
                let valid = tokio::task::spawn_blocking(move || {
                    let _one_at_a_time = gate.lock().unwrap_or_else(PoisonError::into_inner);
                    bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key, valid);
                valid
            }
        };
        valid && known
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

    #[tokio::test]
    async fn the_right_password_and_nothing_else() {
        let mut users = BTreeMap::new();
        users.insert("prometheus".to_string(), bcrypt::hash("secret", 4).unwrap());
        let auth = Auth::default();
        assert!(
            auth.check(&users, Some(&basic("prometheus", "secret")))
                .await
        );
        // Remembered: the second check takes no bcrypt.
        assert!(
            auth.check(&users, Some(&basic("prometheus", "secret")))
                .await
        );
        assert!(
            !auth
                .check(&users, Some(&basic("prometheus", "wrong")))
                .await
        );
        assert!(
            !auth
                .check(&users, Some(&basic("nobody", "fakepassword")))
                .await
        );
        assert!(!auth.check(&users, None).await);
        assert!(
            !auth
                .check(&users, Some(&HeaderValue::from_static("Basic !!!")))
                .await
        );
        assert!(
            !auth
                .check(&users, Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert_eq!(auth.cache.lock().unwrap().len(), 3);
    }
}
