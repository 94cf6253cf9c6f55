//! The layout of `state.json`, and reading it entry by entry.
//!
//! Format 1 (0.1.0 and later):
//!
//! ```json
//! { "version": 1, "saved_at": 1795673429.5,
//!   "sensors": { "ac001": { "energy_joules": 123.5, "energy_reverse_joules": 0.0 } } }
//! ```
//!
//! The version is read first, so a newer layout is recognised as such rather than as damage.
//! Each sensor's entry is parsed and checked on its own: one bad entry spoils only itself.

use std::collections::BTreeMap;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::{StoredSensor, StoredState};

/// The format this build writes. It reads this one and every older one.
pub const FORMAT_VERSION: u32 = 1;

/// The file's layout, format 1.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    /// Unix time of the write.
    saved_at: f64,
    sensors: &'a BTreeMap<String, StoredSensor>,
}

/// Just the version, read before anything else so a newer layout is recognised as such.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[allow(dead_code)]
    version: u64,
    #[serde(default)]
    #[allow(dead_code)]
    saved_at: Option<f64>,
    #[serde(default)]
    sensors: Entries,
}

/// The entries of a JSON object in file order, duplicates included (serde's maps keep the
/// last of two equal keys without a word), each value still unparsed so that one bad entry
/// spoils only itself.
#[derive(Default)]
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of sensor names and totals")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// What the bytes of a state file hold.
pub enum Parsed {
    /// The usable totals and a line per entry that was not.
    Totals(StoredState, Vec<String>),
    /// Nothing usable.
    Corrupt(String),
    /// A newer format.
    Newer(u64),
}

/// The bytes of a state file of `state`, saved at `saved_at` (Unix time).
pub fn encode(state: &StoredState, saved_at: f64) -> serde_json::Result<Vec<u8>> {
    let file = FileOut {
        version: FORMAT_VERSION,
        saved_at,
        sensors: &state.sensors,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Read the bytes of a state file: every usable total, a line per entry that was not.
pub fn parse(bytes: &[u8]) -> Parsed {
    let version = match serde_json::from_slice::<VersionOnly>(bytes) {
        Ok(v) => v.version,
        Err(e) => return Parsed::Corrupt(format!("not a state file: {e}")),
    };
    if version > u64::from(FORMAT_VERSION) {
        return Parsed::Newer(version);
    }
    if version == 0 {
        return Parsed::Corrupt("format version 0 does not exist".into());
    }
    let file = match serde_json::from_slice::<FileIn>(bytes) {
        Ok(file) => file,
        Err(e) => return Parsed::Corrupt(format!("not a valid state file: {e}")),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in &file.sensors.0 {
        *counts.entry(name).or_default() += 1;
    }
    let mut state = StoredState::default();
    let mut problems = Vec::new();
    for (name, raw) in &file.sensors.0 {
        let times = counts[name.as_str()];
        if times > 1 {
            // Which one is right cannot be told; the moved-aside file keeps both.
            if !problems
                .iter()
                .any(|p: &String| p.starts_with(&format!("sensor {name:?} ")))
            {
                problems.push(format!("sensor {name:?} appears {times} times"));
            }
            continue;
        }
        match serde_json::from_str::<StoredSensor>(raw.get()) {
            Ok(totals) => match totals.implausible() {
                None => {
                    state.sensors.insert(name.clone(), totals);
                }
                Some(why) => problems.push(format!("sensor {name:?}: {why}")),
            },
            Err(e) => problems.push(format!("sensor {name:?}: {e}")),
        }
    }
    Parsed::Totals(state, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any bytes: totals, a refusal or corruption, never a panic; and what is kept is
        /// plausible.
        #[test]
        fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Parsed::Totals(state, _) = parse(&bytes) {
                prop_assert!(state.sensors.values().all(|t| t.implausible().is_none()));
            }
        }

        /// Files close to real ones: any version, names and numbers.
        #[test]
        fn near_files(
            version in prop::sample::select(vec!["0", "1", "2", "-1", "1.5", "\"1\"", "99999999999999999999"]),
            entries in prop::collection::vec(
                ("[a-z0-9_]{0,8}", prop::sample::select(vec![
                    "0", "-5", "1e308", "1e999", "NaN", "\"x\"", "null", "5000.5", "1e15", "1.0000001e15",
                ])),
                0..6,
            ),
        ) {
            let body: Vec<String> = entries
                .iter()
                .map(|(n, v)| format!("\"{n}\": {{\"energy_joules\": {v}}}"))
                .collect();
            let text = format!("{{\"version\": {version}, \"sensors\": {{{}}}}}", body.join(", "));
            match parse(text.as_bytes()) {
                Parsed::Totals(state, problems) => {
                    prop_assert!(state.sensors.values().all(|t| t.implausible().is_none()));
                    prop_assert!(state.sensors.len() + problems.len() <= entries.len());
                }
                Parsed::Newer(v) => prop_assert!(v > u64::from(FORMAT_VERSION)),
                Parsed::Corrupt(_) => {}
            }
        }
    }

    #[test]
    fn encoded_totals_parse_back() {
        let mut state = StoredState::default();
        state.sensors.insert(
            "a".into(),
            StoredSensor {
                energy_joules: 0.1 + 0.2,
                energy_reverse_joules: 7.0,
            },
        );
        let Parsed::Totals(back, problems) = parse(&encode(&state, 1.0).unwrap()) else {
            panic!("not totals")
        };
        assert!(problems.is_empty());
        assert_eq!(back, state);
    }
}
