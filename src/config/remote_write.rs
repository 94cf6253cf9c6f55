//! `[[remote_write]]`: pushing the series to a central store with Prometheus remote write
//! 1.0, in Prometheus's own vocabulary where it fits (its `remote_write` section):
//!
//! ```toml
//! [[remote_write]]
//! url = "https://metrics.example.org/api/v1/write"
//! interval = "15s"                          # how often the series are taken for pushing
//! external_labels = { instance = "cabin" }  # default: instance = the host name, job = "power-monitord"
//! headers = { "X-Scope-OrgID" = "home" }
//! basic_auth = { username = "pi", password_file = "/etc/power-monitord/rw-password" }
//! tls_config = { ca_file = "ca.crt" }
//! ```
//!
//! Secrets only from files, as for MQTT.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Invalid};
use super::mqtt::{hostname, read_secret, Secret};
use super::values::{duration, opt_duration};

/// `[[remote_write]]` as the file has it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoteWriteFile {
    url: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(
        default = "RemoteWriteFile::default_interval",
        deserialize_with = "duration"
    )]
    interval: Duration,
    #[serde(
        default = "RemoteWriteFile::default_timeout",
        deserialize_with = "duration"
    )]
    remote_timeout: Duration,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    basic_auth: Option<BasicAuthFile>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    tls_config: TlsFile,
    #[serde(default)]
    queue_config: QueueFile,
    /// Hold samples while the system clock is not synchronised (`adjtimex`).
    #[serde(default = "RemoteWriteFile::default_true")]
    wait_for_clock_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthFile {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QueueFile {
    /// The spool's size limit, in MiB.
    max_spool_mib: u32,
    #[serde(deserialize_with = "duration")]
    min_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    max_backoff: Duration,
    /// Samples older than this are dropped rather than sent (none: 0).
    #[serde(deserialize_with = "opt_duration")]
    sample_age_limit: Option<Duration>,
    /// While the receiver is away, what waits in memory goes to the spool this often.
    #[serde(deserialize_with = "duration")]
    spool_flush_interval: Duration,
}

impl Default for QueueFile {
    fn default() -> QueueFile {
        QueueFile {
            max_spool_mib: 64,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            sample_age_limit: None,
            spool_flush_interval: Duration::from_secs(300),
        }
    }
}

/// How the requests authenticate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Auth {
    /// Not at all.
    None,
    /// `Authorization: Basic`.
    Basic {
        /// The user.
        username: String,
        /// The password, from its file.
        password: Secret,
    },
    /// `Authorization: Bearer`, the token from its file.
    Bearer(Secret),
}

/// A checked `[[remote_write]]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteWriteConfig {
    /// The receiver.
    pub(crate) url: hyper::Uri,
    /// The queue's name: the spool's directory and the `queue` label of its metrics.
    pub(crate) name: String,
    /// How often the series are taken for pushing.
    pub(crate) interval: Duration,
    /// How long a request may take.
    pub(crate) timeout: Duration,
    /// Added to every series (`instance` and `job` always among them), sorted.
    pub(crate) external_labels: Vec<(String, String)>,
    /// Extra request headers.
    pub(crate) headers: Vec<(String, String)>,
    /// Authentication.
    pub(crate) auth: Auth,
    /// The CA that signs the receiver's certificate (default: the system's).
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate and its key.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the receiver's certificate must have (default: the URL's host).
    pub(crate) server_name: Option<String>,
    /// The spool's size limit, in bytes.
    pub(crate) max_spool_bytes: u64,
    /// Retries wait from this …
    pub(crate) min_backoff: Duration,
    /// … doubling up to this.
    pub(crate) max_backoff: Duration,
    /// Samples older than this are dropped.
    pub(crate) sample_age_limit: Option<Duration>,
    /// While the receiver is away, memory goes to the spool this often: the most a power cut
    /// loses, and a write to the card per interval.
    pub(crate) spool_flush_interval: Duration,
    /// Hold samples until the system clock is synchronised (a Pi without a real-time clock
    /// boots in the past); false for a clock kept by other means (an RTC, no NTP).
    pub(crate) wait_for_clock_sync: bool,
}

/// Headers the file may not set: the protocol's own and the authentication's.
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "x-prometheus-remote-write-version",
];

impl RemoteWriteFile {
    fn default_true() -> bool {
        true
    }

    fn default_interval() -> Duration {
        Duration::from_secs(15)
    }

    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// The checked form; files relative to `base` (the configuration's directory).
    pub(crate) fn check(self, base: &Path) -> Result<RemoteWriteConfig, Invalid> {
        let url: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| invalid("url", format!("{:?} is not a URL: {e}", self.url)))?;
        match (url.scheme_str(), url.host()) {
            (Some("http" | "https"), Some(_)) => {}
            _ => {
                return Err(invalid(
                    "url",
                    format!("{:?}: expected http:// or https:// and a host, e.g. \"https://prometheus.example.org/api/v1/write\"", self.url),
                ))
            }
        }
        if url.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                "url",
                "credentials in the URL are refused: use basic_auth with a password_file",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.interval) {
            return Err(invalid("interval", "expected 1s to 1h"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.remote_timeout) {
            return Err(invalid("remote_timeout", "expected 100ms to 10m"));
        }
        let name = match self.name {
            Some(name) => name,
            None => url.host().unwrap_or("remote").to_string(),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "name",
                format!("{name:?}: expected letters, digits, '-', '_' and '.' (it names the spool's directory)"),
            ));
        }
        let mut labels = self.external_labels;
        for label in labels.keys() {
            let valid = label.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
            if !valid || label.starts_with("__") {
                return Err(invalid(
                    &format!("external_labels.{label}"),
                    "not a label name: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __",
                ));
            }
        }
        labels.entry("instance".into()).or_insert_with(hostname);
        labels
            .entry("job".into())
            .or_insert_with(|| "power-monitord".into());
        for header in self.headers.keys() {
            if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str())
                || hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err()
            {
                return Err(invalid(
                    &format!("headers.{header}"),
                    "cannot be configured: the protocol and the authentication set it",
                ));
            }
        }
        let file = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let auth = match (self.basic_auth, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "bearer_token_file",
                    "basic_auth and a bearer token exclude each other",
                ))
            }
            (Some(basic), None) => {
                if basic.password.is_some() {
                    return Err(invalid(
                        "basic_auth.password",
                        "a password is not kept in the configuration: put it in a file and give basic_auth.password_file",
                    ));
                }
                let path = basic.password_file.as_ref().ok_or_else(|| {
                    invalid(
                        "basic_auth.password_file",
                        "basic_auth needs its password_file",
                    )
                })?;
                Auth::Basic {
                    username: basic.username,
                    password: read_secret("basic_auth.password_file", &file(path))?,
                }
            }
            (None, Some(path)) => Auth::Bearer(read_secret("bearer_token_file", &file(path))?),
            (None, None) => Auth::None,
        };
        let tls = self.tls_config;
        let client_cert = match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => Some((file(c), file(k))),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls_config",
                    "a client certificate needs both cert_file and key_file",
                ))
            }
        };
        let q = self.queue_config;
        if !(1..=4096).contains(&q.max_spool_mib) {
            return Err(invalid(
                "queue_config.max_spool_mib",
                "expected 1 to 4096 MiB",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&q.spool_flush_interval) {
            return Err(invalid(
                "queue_config.spool_flush_interval",
                "expected 1s to 1h",
            ));
        }
        if q.min_backoff.is_zero() || q.max_backoff < q.min_backoff {
            return Err(invalid(
                "queue_config.max_backoff",
                "expected min_backoff above 0 and max_backoff at least min_backoff",
            ));
        }
        Ok(RemoteWriteConfig {
            url,
            name,
            interval: self.interval,
            timeout: self.remote_timeout,
            external_labels: labels.into_iter().collect(),
            headers: self.headers.into_iter().collect(),
            auth,
            ca_file: tls.ca_file.as_ref().map(file),
            client_cert,
            server_name: tls.server_name,
            max_spool_bytes: u64::from(q.max_spool_mib) << 20,
            min_backoff: q.min_backoff,
            max_backoff: q.max_backoff,
            sample_age_limit: q.sample_age_limit.filter(|d| !d.is_zero()),
            spool_flush_interval: q.spool_flush_interval,
            wait_for_clock_sync: self.wait_for_clock_sync,
        })
    }
}
