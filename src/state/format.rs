//! The layout of `state.json`, and reading it entry by entry.
//!
//! Format 2 (0.2.0 and later) adds the battery monitors to format 1 (0.1.0):
//!
//! ```json
//! { "version": 2, "saved_at": 1795673429.5,
//!   "sensors": { "ac001": { "energy_joules": 123.5, "energy_reverse_joules": 0.0 } },
//!   "batteries": { "house": { "samples": 86400, "status": "synchronized",
//!     "below_full_coulombs": 126000.0, "charge_in_coulombs": 2.1e6, "charge_out_coulombs": 2.2e6,
//!     "full_charges": 3, "reference_unix": 1795600000.0, "uncertainty_ratio": 0.0,
//!     "last_sample_unix": 1795673429.1 } } }
//! ```
//!
//! The version is read first, so a newer layout is recognised as such rather than as damage;
//! a format-1 file is read as one without batteries. Each sensor's and battery's entry is
//! parsed and checked on its own: one bad entry spoils only itself.

use std::collections::BTreeMap;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::{StoredBattery, StoredSensor, StoredState};

/// The format this build writes. It reads this one and every older one.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The file's layout, format 2.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    /// Unix time of the write.
    saved_at: f64,
    sensors: &'a BTreeMap<String, StoredSensor>,
    batteries: &'a BTreeMap<String, StoredBattery>,
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
    #[serde(default)]
    batteries: Entries,
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
pub(crate) enum Parsed {
    /// The usable totals and a line per entry that was not.
    Totals(StoredState, Vec<String>),
    /// Nothing usable.
    Corrupt(String),
    /// A newer format.
    Newer(u64),
}

/// The bytes of a state file of `state`, saved at `saved_at` (Unix time).
pub(crate) fn encode(state: &StoredState, saved_at: f64) -> serde_json::Result<Vec<u8>> {
    let file = FileOut {
        version: FORMAT_VERSION,
        saved_at,
        sensors: &state.sensors,
        batteries: &state.batteries,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The usable entries of one section (`what`: "sensor" or "battery"), each parsed and checked
/// on its own; a line in `problems` for each that is not.
fn checked<T: serde::de::DeserializeOwned>(
    entries: &Entries,
    what: &str,
    implausible: fn(&T) -> Option<String>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, T> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in &entries.0 {
        *counts.entry(name).or_default() += 1;
    }
    let mut kept = BTreeMap::new();
    for (name, raw) in &entries.0 {
        let times = counts[name.as_str()];
        if times > 1 {
            // Which one is right cannot be told; the moved-aside file keeps both.
            let line = format!("{what} {name:?} appears {times} times");
            if !problems.contains(&line) {
                problems.push(line);
            }
            continue;
        }
        match serde_json::from_str::<T>(raw.get()) {
            Ok(value) => match implausible(&value) {
                None => {
                    kept.insert(name.clone(), value);
                }
                Some(why) => problems.push(format!("{what} {name:?}: {why}")),
            },
            Err(e) => problems.push(format!("{what} {name:?}: {e}")),
        }
    }
    kept
}

/// Read the bytes of a state file: every usable total, a line per entry that was not.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
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
    let mut problems = Vec::new();
    let state = StoredState {
        sensors: checked(
            &file.sensors,
            "sensor",
            StoredSensor::implausible,
            &mut problems,
        ),
        batteries: checked(
            &file.batteries,
            "battery",
            StoredBattery::implausible,
            &mut problems,
        ),
    };
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
    fn a_format_1_file_is_read_without_batteries() {
        let text = r#"{"version": 1, "saved_at": 5.0, "sensors": {"a": {"energy_joules": 12.5}}}"#;
        let Parsed::Totals(state, problems) = parse(text.as_bytes()) else {
            panic!("not totals")
        };
        assert!(problems.is_empty());
        assert_eq!(state.sensors["a"].energy_joules, 12.5);
        assert!(state.batteries.is_empty());
    }

    #[test]
    fn a_bad_battery_entry_costs_only_itself() {
        let good = r#"{"samples": 5, "status": "estimated", "below_full_coulombs": 10.0,
            "charge_in_coulombs": 1.0, "charge_out_coulombs": 2.0, "full_charges": 0,
            "reference_unix": 1.7e9, "uncertainty_ratio": null, "last_sample_unix": 1.7e9}"#;
        let text = format!(
            r#"{{"version": 2, "sensors": {{}}, "batteries": {{"a": {good}, "b": {}, "c": {}}}}}"#,
            good.replace("10.0", "-3"),
            good.replace("\"estimated\"", "\"full\"")
        );
        let Parsed::Totals(state, problems) = parse(text.as_bytes()) else {
            panic!("not totals")
        };
        assert_eq!(state.batteries.len(), 1, "{problems:?}");
        assert!(state.batteries["a"].uncertainty_ratio.is_nan());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("battery \"b\": below_full_coulombs"),
            "{problems:?}"
        );
    }

    #[test]
    fn encoded_totals_parse_back() {
        let mut state = StoredState::default();
        state.sensors.insert(
            "a".into(),
            StoredSensor {
                energy_joules: 0.1 + 0.2,
                energy_reverse_joules: 7.0,
                day: 125_330,
                day_start_joules: 0.1,
            },
        );
        state.batteries.insert(
            "house".into(),
            StoredBattery {
                samples: 99,
                status: super::super::SocStatus::Synchronized,
                below_full_coulombs: 0.1 + 0.7,
                charge_in_coulombs: 5.0,
                charge_out_coulombs: 6.0,
                full_charges: 2,
                reference_unix: 1.7e9,
                uncertainty_ratio: 0.0,
                last_sample_unix: 1.7e9 + 0.1,
            },
        );
        let Parsed::Totals(back, problems) = parse(&encode(&state, 1.0).unwrap()) else {
            panic!("not totals")
        };
        assert!(problems.is_empty());
        assert_eq!(back, state);
    }
}
