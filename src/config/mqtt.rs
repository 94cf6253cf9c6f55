//! `[mqtt]`: publishing to an MQTT broker, with Home Assistant discovery. Without the section
//! there is no MQTT at all.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Check, Invalid};
use super::values::duration;

/// `[mqtt]` as the file has it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttFile {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    broker: String,
    /// The CA that signed the broker's certificate (mqtts; default the system's CAs).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// A client certificate for the broker (mqtts; with `client_key_file`).
    #[serde(default)]
    client_cert_file: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    client_key_file: Option<PathBuf>,
    /// The user name.
    #[serde(default)]
    username: Option<String>,
    /// Refused: the password goes in `password_file`.
    #[serde(default)]
    password: Option<String>,
    /// A file holding the password (its first line), readable by the daemon and not by
    /// everyone.
    #[serde(default)]
    password_file: Option<PathBuf>,
    /// The client id (default `power-monitord-<hostname>`).
    #[serde(default)]
    client_id: Option<String>,
    /// Where states and availability go (default `power-monitord/<hostname>`).
    #[serde(default)]
    topic_prefix: Option<String>,
    /// Publish Home Assistant discovery configurations.
    #[serde(default = "MqttFile::default_true")]
    discovery: bool,
    /// Home Assistant's discovery prefix.
    #[serde(default = "MqttFile::default_discovery_prefix")]
    discovery_prefix: String,
    /// How often each sensor's state is published.
    #[serde(default = "MqttFile::default_interval", deserialize_with = "duration")]
    interval: Duration,
    /// The QoS of state messages (0 or 1; discovery and availability are always 1).
    #[serde(default)]
    qos: Qos,
    /// Retain state messages (discovery and availability are always retained).
    #[serde(default)]
    retain: bool,
}

/// `[mqtt]`, checked: the broker parsed, files relative to the configuration's directory,
/// the password read, the defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MqttConfig {
    /// The broker as configured (for messages).
    pub(crate) broker: String,
    /// Its host, port and scheme.
    pub(crate) endpoint: Broker,
    /// The CA that signed the broker's certificate (default the system's CAs).
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate for the broker, and its key.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The user name.
    pub(crate) username: Option<String>,
    /// The password, read from `password_file`.
    pub(crate) password: Option<Secret>,
    /// The client id.
    pub(crate) client_id: String,
    /// Where states and availability go.
    pub(crate) topic_prefix: String,
    /// Publish Home Assistant discovery configurations.
    pub(crate) discovery: bool,
    /// Home Assistant's discovery prefix.
    pub(crate) discovery_prefix: String,
    /// How often each sensor's state is published.
    pub(crate) interval: Duration,
    /// The QoS of state messages.
    pub(crate) qos: Qos,
    /// Retain state messages.
    pub(crate) retain: bool,
}

/// `mqtt.qos`: what the broker promises for state messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub(crate) enum Qos {
    /// 0: at most once.
    #[default]
    AtMostOnce,
    /// 1: at least once.
    AtLeastOnce,
}

impl TryFrom<u8> for Qos {
    type Error = String;
    fn try_from(qos: u8) -> Result<Self, String> {
        match qos {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            _ => Err(format!("{qos} is not a QoS; expected 0 or 1")),
        }
    }
}

/// A password: compared, never printed.
#[derive(Clone, PartialEq)]
pub(crate) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A broker address.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Broker {
    /// The host name or address.
    pub(crate) host: String,
    /// The port.
    pub(crate) port: u16,
    /// Over TLS.
    pub(crate) tls: bool,
}

impl MqttFile {
    fn default_true() -> bool {
        true
    }
    fn default_discovery_prefix() -> String {
        "homeassistant".into()
    }
    fn default_interval() -> Duration {
        Duration::from_secs(10)
    }

    /// The broker's host, port and scheme.
    fn broker(&self) -> Result<Broker, String> {
        let expected = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]";
        let (tls, rest) = if let Some(rest) = self.broker.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.broker.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!("{:?}: {expected}", self.broker));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{port:?} is not a port; {expected}"))?,
            ),
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', '?', ' ']) {
            return Err(format!("{:?}: no host; {expected}", self.broker));
        }
        Ok(Broker {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// Checks of `[mqtt]`, with files relative to `base`; the password is read here.
    pub(crate) fn check(self, base: &Path) -> Result<MqttConfig, Invalid> {
        let endpoint = self.broker().map_err(|e| invalid("broker", e))?;
        if self.password.is_some() {
            return Err(invalid(
                "password",
                "a password does not belong in the configuration file, which everyone may read; expected password_file = \"PATH\" naming a file that holds it (chmod 640, group power-monitord)",
            ));
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(invalid("username", "a password_file needs a username"));
        }
        let password = match &self.password_file {
            Some(file) => Some(read_password(&base.join(file))?),
            None => None,
        };
        self.check_topics()?;
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("interval", "expected 1 s to 1 h"));
        }
        for (key, file) in [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ] {
            let Some(file) = file else { continue };
            if !endpoint.tls {
                return Err(invalid(key, "applies to mqtts:// brokers only"));
            }
            std::fs::metadata(base.join(file)).map_err(|e| {
                invalid(
                    key,
                    format!("cannot read {}: {e}", base.join(file).display()),
                )
            })?;
        }
        let client_cert = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "client_key_file",
                    "expected client_cert_file and client_key_file together",
                ))
            }
        };
        Ok(MqttConfig {
            endpoint,
            ca_file: self.ca_file.map(|f| base.join(f)),
            client_cert,
            username: self.username,
            password,
            client_id: self
                .client_id
                .unwrap_or_else(|| format!("power-monitord-{}", hostname())),
            topic_prefix: self
                .topic_prefix
                .unwrap_or_else(|| format!("power-monitord/{}", hostname())),
            discovery: self.discovery,
            discovery_prefix: self.discovery_prefix,
            interval: self.interval,
            qos: self.qos,
            retain: self.retain,
            broker: self.broker,
        })
    }

    fn check_topics(&self) -> Check {
        let bad = |t: &str| {
            t.is_empty() || t.contains(['#', '+', '\0']) || t.starts_with('/') || t.ends_with('/')
        };
        if let Some(prefix) = &self.topic_prefix {
            if bad(prefix) {
                return Err(invalid(
                    "topic_prefix",
                    format!("{prefix:?} is not a topic prefix; expected levels such as \"power-monitord/garage\", without wildcards or a leading or trailing /"),
                ));
            }
        }
        if bad(&self.discovery_prefix) {
            return Err(invalid(
                "discovery_prefix",
                "expected a topic level such as \"homeassistant\"",
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err(invalid("client_id", "expected 1 to 128 characters"));
            }
        }
        Ok(())
    }
}

/// The password in `path`: its first line. The file must not be readable by everyone.
fn read_password(path: &Path) -> Result<Secret, Invalid> {
    read_secret("password_file", path)
}

/// The secret in `path` (given by `key`): its first line. The file must not be readable by
/// everyone.
pub(crate) fn read_secret(key: &str, path: &Path) -> Result<Secret, Invalid> {
    let meta = std::fs::metadata(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(invalid(
            key,
            format!(
                "{} is readable by everyone; expected it private to the daemon (chmod 640, group power-monitord)",
                path.display()
            ),
        ));
    }
    let text = crate::files::read_text(path, crate::files::MAX_SMALL_FILE)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(password))
}

/// This machine's host name (for the default client id and topic prefix).
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(broker: &str) -> MqttFile {
        toml::from_str(&format!("broker = \"{broker}\"")).unwrap()
    }

    #[test]
    fn brokers_parse_with_their_default_ports() {
        let b = |s| config(s).broker();
        assert_eq!(
            b("mqtt://pi.local").unwrap(),
            Broker {
                host: "pi.local".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(b("mqtts://10.0.0.2").unwrap().port, 8883);
        assert_eq!(b("mqtt://127.0.0.1:1884/").unwrap().port, 1884);
        assert_eq!(
            b("mqtts://[::1]:8884").unwrap(),
            Broker {
                host: "::1".into(),
                port: 8884,
                tls: true
            }
        );
        assert!(b("tcp://host").is_err());
        assert!(b("mqtt://").is_err());
        assert!(b("mqtt://host:99999").is_err());
        assert!(b("mqtt://user@host").is_err());
    }

    #[test]
    fn a_host_name_is_a_topic_level() {
        let h = hostname();
        assert!(!h.is_empty() && !h.contains(['/', '#', '+', '.']), "{h}");
    }
}
