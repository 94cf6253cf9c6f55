//! serde helpers for the values a config file spells as text: durations and listen addresses.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::DEFAULT_PORT;

/// A human duration such as "500ms", "30s", "24h" or "1h 30m".
///
/// Written out instead of `humantime_serde` so that the message keeps humantime's reason
/// ("unknown time unit \"x\"") rather than a bare "expected a duration".
pub(crate) fn duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected a duration string such as \"500ms\", \"30s\" or \"24h\"")
    })?;
    let d = humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e}; expected a number and a unit, such as \"500ms\", \"30s\" or \"24h\""
        ))
    })?;
    if d > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is longer than a year; expected at most \"366d\""
        )));
    }
    Ok(d)
}

/// The longest duration a config file may give: every one of them (intervals, windows,
/// simulated faults, how long a battery may go without a full charge) is far shorter, and
/// time arithmetic on a longer one could overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// An optional [`duration`].
pub(crate) fn opt_duration<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    duration(deserializer).map(Some)
}

/// One `IP:PORT` string or a list of them.
pub(crate) fn one_or_many_addrs<'de, D>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected an address string or a list of them"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid listen address {s:?}: expected IP:PORT, such as \"0.0.0.0:{DEFAULT_PORT}\" or \"[::1]:{DEFAULT_PORT}\""
                ))
            })
        })
        .collect()
}

/// The longest sensor or battery name (it becomes a label value).
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Whether `name` can be a sensor name (the `sensor` label).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
