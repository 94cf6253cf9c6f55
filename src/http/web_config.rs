//! The web configuration file: TLS, basic authentication, extra response headers and a rate
//! limit, in the format of the Prometheus exporter-toolkit (`--web.config.file` of
//! node_exporter and Prometheus), so one file and one Prometheus `scrape_config` serve them
//! all:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # paths relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: clients.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt (htpasswd -nBC 10 prometheus)
//! rate_limit: { burst: 20, interval: 100ms }
//! ```
//!
//! Read strictly (an unknown key is an error), checked, and the certificates loaded, at start
//! and at every reload: a mistake names the file, the position and the key, and stops the
//! start with exit 78 (a reload keeps the running configuration).
//!
//! Differences from the toolkit, each an error rather than a surprise: TLS is rustls, so
//! TLS 1.0 and 1.1 are never offered, only the AEAD cipher suites exist, and client
//! certificates are always verified against `client_ca_file` (`RequestClientCert` and
//! `RequireAnyClientCert` are refused); `client_allowed_sans` takes DNS names and IP
//! addresses; `http2` is accepted but the server speaks HTTP/1.1.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{mistake, tls, Mistake};

/// A mistake in a web configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfigError {
    /// The file.
    pub(crate) file: PathBuf,
    /// Line and column, when the YAML parser knows them.
    pub(crate) position: Option<(usize, usize)>,
    /// The key, e.g. `tls_server_config.cert_file`; empty for the file as a whole.
    pub(crate) key: String,
    /// What is wrong and what was expected.
    pub(crate) message: String,
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for WebConfigError {}

/// `rate_limit`: requests allowed in a burst, and one more per interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateLimit {
    /// Requests allowed at once.
    pub(crate) burst: u32,
    /// One more request is allowed per this.
    pub(crate) interval: Duration,
}

/// What the server enforces, as the web configuration file says (nothing without one).
#[derive(Default)]
pub struct WebSecurity {
    /// TLS for every connection, when configured.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic-auth users and their bcrypt hashes; empty: no authentication.
    pub(crate) users: super::auth::Users,
    /// Headers added to every response.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// A limit on requests, when configured.
    pub(crate) rate_limit: Option<RateLimit>,
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.names().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    tls_server_config: Option<tls::TlsIn>,
    #[serde(default)]
    http_server_config: Option<HttpIn>,
    #[serde(default)]
    rate_limit: Option<RateLimitIn>,
    #[serde(default, deserialize_with = "unique_keys")]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// A map in which a key given twice is a mistake rather than "the last one wins": two
/// entries for one user would leave the reader to guess which password is in force.
fn unique_keys<'de, D>(deserializer: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of names to strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format_args!(
                        "`{key}` is given twice; keep one"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Unique).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpIn {
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default, deserialize_with = "unique_keys")]
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitIn {
    #[serde(default)]
    burst: u32,
    #[serde(default)]
    interval: Option<String>,
}

/// Headers the file may set, and the values they may take (any, when none are listed) — the
/// exporter-toolkit's list.
const HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The most expensive bcrypt cost accepted: each new password check costs about 2^cost
/// rounds, seconds on a Raspberry Pi above this.
const MAX_BCRYPT_COST: u32 = 14;

fn check_users(users: BTreeMap<String, String>) -> Result<super::auth::Users, Mistake> {
    for (user, hash) in &users {
        let key = format!("basic_auth_users.{user}");
        let parts = bcrypt::HashParts::from_str(hash).map_err(|_| {
            mistake(
                &key,
                "not a bcrypt hash; make one with `htpasswd -nBC 10 USER` (the part after the colon)",
            )
        })?;
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(mistake(
                &key,
                format!(
                    "bcrypt cost {} makes every new password check take seconds; expected at most {MAX_BCRYPT_COST} (10 is usual)",
                    parts.get_cost()
                ),
            ));
        }
    }
    Ok(super::auth::Users::new(users))
}

fn check_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Mistake> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(mistake(
                    key,
                    format!(
                        "this header cannot be configured; expected one of {}",
                        names.join(", ")
                    ),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(mistake(
                    key,
                    format!("{value:?} is not allowed; expected one of {allowed:?}"),
                ));
            }
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| mistake(&key, e.to_string()))?;
            let value = HeaderValue::from_str(&value).map_err(|e| mistake(&key, e.to_string()))?;
            Ok((header, value))
        })
        .collect()
}

fn check_rate_limit(limit: RateLimitIn) -> Result<Option<RateLimit>, Mistake> {
    let Some(text) = limit.interval else {
        return Ok(None);
    };
    let interval = humantime::parse_duration(&text).map_err(|e| {
        mistake(
            "rate_limit.interval",
            format!("{text:?} is not a duration ({e}); expected e.g. \"100ms\""),
        )
    })?;
    if interval.is_zero() {
        return Ok(None);
    }
    if limit.burst == 0 {
        return Err(mistake(
            "rate_limit.burst",
            "expected at least 1 request in a burst",
        ));
    }
    Ok(Some(RateLimit {
        burst: limit.burst,
        interval,
    }))
}

/// The deepest nesting of collections a web configuration may have: it has three levels, and
/// YAML parsers spend time quadratic in the depth (a 200 KB file of nested `[` took 50 s).
const MAX_DEPTH: usize = 32;

/// Where the text nests collections deeper than [`MAX_DEPTH`]: the line and the depth. Flow
/// collections (`[`, `{`) count a level each, wherever they are; block collections a level
/// per step of indentation (and per `- ` or `? ` that starts one on a line).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut content = content;
        if flow == 0 {
            let mut indent = line.len() - content.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x` and `? ? x` nest on one line: a level per indicator.
            while let Some(rest) = ["- ", "? "].iter().find_map(|i| content.strip_prefix(i)) {
                let inner = rest.trim_start();
                indent += content.len() - inner.len();
                content = inner;
                indents.push(indent);
                if indents.len() > MAX_DEPTH {
                    return Some((number + 1, indents.len()));
                }
            }
        }
        // Every bracket counts, in quotes and comments too: telling those apart is the
        // parser's work (YAML's `a#` and `'it''s'` are not what they seem), and a web
        // configuration has no reason to hold 32 of them.
        for c in content.chars() {
            match c {
                '[' | '{' => flow += 1,
                ']' | '}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            if flow + indents.len() > MAX_DEPTH {
                return Some((number + 1, flow + indents.len()));
            }
        }
        if indents.len() > MAX_DEPTH {
            return Some((number + 1, indents.len()));
        }
    }
    None
}

/// Read, check and load the web configuration file at `path`.
pub(crate) fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
    let error = |position, key: String, message: String| WebConfigError {
        file: path.to_path_buf(),
        position,
        key,
        message,
    };
    let text = crate::files::read_text(path, crate::files::MAX_SMALL_FILE)
        .map_err(|e| error(None, String::new(), format!("cannot read it: {e}")))?;
    if let Some((line, depth)) = too_deep(&text) {
        return Err(error(
            Some((line, 1)),
            String::new(),
            format!("collections nested {depth} deep; expected at most {MAX_DEPTH} (a web configuration is a few levels deep)"),
        ));
    }
    let file: FileIn = if text.trim().is_empty() {
        FileIn::default()
    } else {
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let position = inner.location().map(|l| (l.line(), l.column()));
            let key = if key == "." { String::new() } else { key };
            // The YAML error says where itself ("a.b: … at line 4 column 3"): keep the words.
            let text = inner.to_string();
            let text = text
                .rfind(" at line ")
                .map_or(text.as_str(), |i| &text[..i]);
            let text = text
                .split_once(": ")
                .filter(|(path, _)| !path.contains(' '))
                .map_or(text, |(_, rest)| rest);
            error(
                position,
                key,
                crate::config::diagnostic::explain_serde_message(text),
            )
        })?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let checked = || -> Result<WebSecurity, Mistake> {
        let http = file.http_server_config.unwrap_or_default();
        Ok(WebSecurity {
            tls: file
                .tls_server_config
                .map(|t| tls::server_config(t, dir))
                .transpose()?,
            users: check_users(file.basic_auth_users.unwrap_or_default())?,
            headers: check_headers(http.headers.unwrap_or_default())?,
            rate_limit: file.rate_limit.map(check_rate_limit).transpose()?.flatten(),
        })
    };
    checked().map_err(|m| error(None, m.key, m.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<WebSecurity, WebConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    /// `htpasswd -nbBC 10 prometheus secret`.
    const HASH: &str = "$2y$10$BZPX6EuplaVqYeiVEJmzneH3rfiBO4pnedFutQT4G98sGk1TH59Ba";

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let web = load_text("").unwrap();
        assert!(web.tls.is_none() && web.users.is_empty() && web.rate_limit.is_none());
    }

    #[test]
    fn users_headers_and_a_rate_limit() {
        let web = load_text(&format!(
            "basic_auth_users:\n  prometheus: {HASH}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nrate_limit:\n  burst: 5\n  interval: 100ms\n"
        ))
        .unwrap();
        assert_eq!(web.users.hash("prometheus"), Some(HASH));
        assert_eq!(web.headers[0].0, "x-frame-options");
        assert_eq!(
            web.rate_limit,
            Some(RateLimit {
                burst: 5,
                interval: Duration::from_millis(100)
            })
        );
    }

    #[track_caller]
    fn refused(text: &str, key: &str, needle: &str) {
        let err = load_text(text).expect_err("should be refused");
        assert_eq!(err.key, key, "{err}");
        assert!(
            err.to_string().contains(needle),
            "{needle:?} missing: {err}"
        );
        assert!(err.to_string().contains("web.yml"), "{err}");
    }

    #[test]
    fn mistakes_name_the_key() {
        refused(
            "basic_auth_user:\n  a: b\n",
            "basic_auth_user",
            "unknown key `basic_auth_user`",
        );
        refused(
            "basic_auth_users:\n  alice: plaintext\n",
            "basic_auth_users.alice",
            "not a bcrypt hash",
        );
        refused(
            "basic_auth_users:\n  alice: $2y$31$BZPX6EuplaVqYeiVEJmzneH3rfiBO4pnedFutQT4G98sGk1TH59Ba\n",
            "basic_auth_users.alice",
            "bcrypt cost 31",
        );
        refused(
            "http_server_config:\n  headers:\n    Server: x\n",
            "http_server_config.headers.Server",
            "cannot be configured",
        );
        refused(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options",
            "not allowed",
        );
        refused(
            "rate_limit:\n  burst: 1\n  interval: fast\n",
            "rate_limit.interval",
            "not a duration",
        );
        refused(
            "tls_server_config:\n  cert_file: missing.crt\n",
            "tls_server_config",
            "missing one of key or key_file",
        );
        refused(
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "tls_server_config.cert_file",
            "missing.crt",
        );
        refused(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_verison: TLS12\n",
            "tls_server_config.min_verison",
            "unknown key `min_verison`",
        );
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let err = load_text(&format!(
            "basic_auth_users:\n  prometheus: {HASH}\n  prometheus: {HASH}\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("`prometheus` is given twice"),
            "{err}"
        );
        assert!(err.position.is_some(), "{err}");
        let err = load_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Frame-Options: sameorigin\n").unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
        // Top-level keys: serde's own check.
        let err = load_text("rate_limit: {burst: 1}\nrate_limit: {burst: 2}\n").unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for text in [
            "[".repeat(100_000),
            format!("basic_auth_users:\n  a: {}", "{".repeat(50)),
            format!("basic_auth_users:\n  {}x\n", "- ".repeat(40)),
            (0..40)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
        ] {
            let started = std::time::Instant::now();
            let err = load_text(&text).unwrap_err();
            assert!(err.to_string().contains("nested"), "{err}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        // A flow map on one line is one level; brackets a quote or comment seems to hide
        // count all the same (to YAML, `a#` and `a'` are plain words).
        assert!(too_deep("rate_limit: { burst: 20, interval: 100ms }\n").is_none());
        for trick in ["[a#, ", "[a', ", "[\"\\\"\", ", "] # "] {
            let text = format!("x: {trick}{}", "[".repeat(40));
            assert!(too_deep(&text).is_some(), "{text}");
        }
        assert!(too_deep(&format!("a:\n  - b: {}\n", "[1] ".repeat(100))).is_none());
    }

    #[test]
    fn a_syntax_error_has_a_position() {
        let err = load_text("basic_auth_users:\n  - [\n").unwrap_err();
        assert!(err.position.is_some(), "{err}");
    }
}
