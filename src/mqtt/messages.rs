//! What goes to the broker: Home Assistant discovery configurations (one device per daemon, an
//! entity per quantity) and the state messages those entities read.
//!
//! Topics, under `topic_prefix` (`power-monitord/<hostname>` by default):
//! - `<prefix>/availability`: `online`, or `offline` (retained; the last will);
//! - `<prefix>/sensor/<name>/state`: `{"power": W, "energy": kWh, "energy_returned": kWh,
//!   "voltage": V, "current": A, "up": "ON"|"OFF", "anomalies": {"<rule>": "ON"|"OFF"}}`;
//! - `<prefix>/battery/<name>/state`: `{"state_of_charge": %, "time_to_go": min,
//!   "synchronized": "ON"|"OFF"}`.
//!
//! A value that is not known (a saturated shunt, a state of charge before the first full
//! charge) is left out, so Home Assistant shows it unknown rather than a made-up number.

use serde_json::{json, Map, Value};

use crate::anomaly::Rule;
use crate::board::SensorStatus;
use crate::energy::JOULES_PER_KWH;

/// What every message of one daemon shares.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The topic prefix.
    pub(crate) prefix: String,
    /// Home Assistant's discovery prefix.
    pub(crate) discovery_prefix: String,
    /// The device's id: a topic level and a prefix of every unique id.
    pub(crate) node: String,
    /// The device's name in Home Assistant.
    pub(crate) device_name: String,
    /// Seconds after which Home Assistant shows an entity unavailable without a new state.
    pub(crate) expire_after: u64,
}

impl Names {
    /// The availability topic.
    pub(crate) fn availability(&self) -> String {
        format!("{}/availability", self.prefix)
    }

    /// A sensor's state topic.
    pub(crate) fn sensor_state(&self, sensor: &str) -> String {
        format!("{}/sensor/{sensor}/state", self.prefix)
    }

    /// A battery's state topic.
    pub(crate) fn battery_state(&self, battery: &str) -> String {
        format!("{}/battery/{battery}/state", self.prefix)
    }

    /// Home Assistant's status topic (`online` when it starts).
    pub(crate) fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    fn device(&self) -> Value {
        json!({
            "identifiers": [self.node],
            "name": self.device_name,
            "manufacturer": "power-monitord",
            "model": "INA2xx power monitor",
            "sw_version": crate::VERSION,
        })
    }
}

/// One entity's discovery message: its config topic and payload.
pub(crate) struct Discovery {
    /// `<discovery_prefix>/<component>/<node>/<object>/config`.
    pub(crate) topic: String,
    /// The configuration (JSON).
    pub(crate) payload: String,
}

/// An entity of a quantity.
struct Entity<'a> {
    component: &'static str,
    object: String,
    name: String,
    state_topic: String,
    key: &'a str,
    extra: Value,
}

fn discovery(names: &Names, e: Entity<'_>) -> Discovery {
    let unique_id = format!("{}_{}", names.node, e.object);
    let mut config = json!({
        "name": e.name,
        "unique_id": unique_id,
        "object_id": unique_id,
        "state_topic": e.state_topic,
        "value_template": format!("{{{{ value_json.{} }}}}", e.key),
        "availability_topic": names.availability(),
        "expire_after": names.expire_after,
        "device": names.device(),
        "origin": {"name": "power-monitord", "sw_version": crate::VERSION},
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), e.extra.as_object()) {
        config.extend(extra.clone());
    }
    Discovery {
        topic: format!(
            "{}/{}/{}/{}/config",
            names.discovery_prefix, e.component, names.node, e.object
        ),
        payload: config.to_string(),
    }
}

/// Every entity of a sensor (and of the battery it measures).
pub(crate) fn sensor_discovery(names: &Names, status: &SensorStatus) -> Vec<Discovery> {
    let sensor = status.name.as_str();
    let state = names.sensor_state(sensor);
    // A battery's shunt also measures the energy that charged it.
    let returned = status.battery.is_some().then_some(&RETURNED);
    let mut out: Vec<Discovery> = SENSOR_QUANTITIES
        .iter()
        .chain(returned)
        .map(|q| quantity(names, &state, (sensor, sensor), q))
        .collect();
    let flag = |object: String, name: String, key: &str, extra: Value| {
        let (component, state_topic) = ("binary_sensor", state.clone());
        let entity = Entity {
            component,
            object,
            name,
            state_topic,
            key,
            extra,
        };
        discovery(names, entity)
    };
    let connectivity = json!({"device_class": "connectivity", "entity_category": "diagnostic"});
    out.push(flag(
        format!("{sensor}_up"),
        format!("{sensor} up"),
        "up",
        connectivity,
    ));
    if !status.rules.is_empty() {
        // One problem flag per sensor, on while any of its rules is in an episode, with each
        // rule's state as an attribute: what ESPHome and the Victron integrations show, rather
        // than an entity per rule.
        out.push(flag(
            format!("{sensor}_problem"),
            format!("{sensor} problem"),
            "problem",
            json!({
                "device_class": "problem",
                "json_attributes_topic": state,
                "json_attributes_template": "{{ value_json.anomalies | tojson }}",
            }),
        ));
    }
    if let Some(battery) = &status.battery {
        out.extend(battery_discovery(names, &battery.name));
    }
    out
}

fn discovery_topic(names: &Names, component: &str, sensor: &str, key: &str) -> String {
    format!(
        "{}/{component}/{}/{sensor}_{key}/config",
        names.discovery_prefix, names.node
    )
}

/// The discovery topics a sensor can have announced (its quantities, its `up`, its problem
/// flag), for emptying them when it goes: Home Assistant removes an entity whose config is
/// emptied. With the flags of each rule that 0.2.0 announced.
pub(crate) fn sensor_discovery_topics(names: &Names, sensor: &str) -> Vec<String> {
    let flags = ["up", "problem"].into_iter();
    SENSOR_QUANTITIES
        .iter()
        .chain([&RETURNED])
        .map(|q| discovery_topic(names, "sensor", sensor, q.0))
        .chain(flags.map(|key| discovery_topic(names, "binary_sensor", sensor, key)))
        .chain(retired_discovery_topics(names, sensor))
        .collect()
}

/// The flag per rule of each sensor that 0.2.0 announced, now the problem flag's attributes:
/// emptied when the sensor is announced, so Home Assistant drops those entities.
pub(crate) fn retired_discovery_topics<'a>(
    names: &'a Names,
    sensor: &'a str,
) -> impl Iterator<Item = String> + 'a {
    crate::anomaly::Rule::ALL
        .into_iter()
        .map(move |r| discovery_topic(names, "binary_sensor", sensor, r.as_str()))
}

/// A measured quantity: its key in the state message, its name, device class, state class,
/// unit and display precision.
type Quantity = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
);

const SENSOR_QUANTITIES: [Quantity; 4] = [
    ("power", "power", "power", "measurement", "W", 1),
    ("energy", "energy", "energy", "total_increasing", "kWh", 3),
    ("voltage", "voltage", "voltage", "measurement", "V", 2),
    ("current", "current", "current", "measurement", "A", 3),
];

const RETURNED: Quantity = (
    "energy_returned",
    "energy returned",
    "energy",
    "total_increasing",
    "kWh",
    3,
);

const BATTERY_QUANTITIES: [Quantity; 2] = [
    (
        "state_of_charge",
        "state of charge",
        "battery",
        "measurement",
        "%",
        1,
    ),
    (
        "time_to_go",
        "time to go",
        "duration",
        "measurement",
        "min",
        0,
    ),
];

/// The discovery config of a quantity published on `state`; its object id and name start with
/// `prefixes`.
fn quantity(names: &Names, state: &str, prefixes: (&str, &str), q: &Quantity) -> Discovery {
    let (key, label, class, state_class, unit, precision) = *q;
    discovery(
        names,
        Entity {
            component: "sensor",
            object: format!("{}_{key}", prefixes.0),
            name: format!("{} {label}", prefixes.1),
            state_topic: state.to_string(),
            key,
            extra: json!({
                "device_class": class,
                "state_class": state_class,
                "unit_of_measurement": unit,
                "suggested_display_precision": precision,
            }),
        },
    )
}

/// The discovery configs of a battery's own entities.
fn battery_discovery(names: &Names, battery: &str) -> Vec<Discovery> {
    let state = names.battery_state(battery);
    let prefixes = (format!("battery_{battery}"), format!("battery {battery}"));
    let mut out: Vec<Discovery> = BATTERY_QUANTITIES
        .iter()
        .map(|q| quantity(names, &state, (&prefixes.0, &prefixes.1), q))
        .collect();
    out.push(discovery(
        names,
        Entity {
            component: "binary_sensor",
            object: format!("battery_{battery}_synchronized"),
            name: format!("battery {battery} synchronised"),
            state_topic: state,
            key: "synchronized",
            extra: json!({"entity_category": "diagnostic"}),
        },
    ));
    out
}

fn on_off(on: bool) -> &'static str {
    if on {
        "ON"
    } else {
        "OFF"
    }
}

/// `value` rounded to `decimals` under `key`; `null` when it is not known: every key the
/// discovery templates read is in every message (Home Assistant shows a `null` as unknown,
/// and warns about a key that is missing).
fn put(map: &mut Map<String, Value>, key: &str, value: Option<f64>, decimals: i32) {
    let value = value.filter(|v| v.is_finite()).map(|v| {
        let scale = 10f64.powi(decimals);
        (v * scale).round() / scale
    });
    map.insert(key.into(), json!(value));
}

/// A sensor's state, with the exported (saved) energy totals: the same numbers Prometheus
/// sees, never lower after a restart.
pub(crate) fn sensor_state(status: &SensorStatus) -> String {
    let energy = (
        status.exported.energy_joules.get(),
        status.exported.energy_reverse_joules.get(),
    );
    let snap = status.snapshot();
    let r = snap.reading.filter(|_| snap.up);
    let mut map = Map::new();
    put(&mut map, "power", r.map(|r| r.power_watts), 3);
    put(&mut map, "voltage", r.map(|r| r.bus_voltage_volts), 4);
    put(&mut map, "current", r.map(|r| r.current_amperes), 5);
    put(&mut map, "energy", Some(energy.0 / JOULES_PER_KWH), 6);
    if status.battery.is_some() {
        put(
            &mut map,
            "energy_returned",
            Some(energy.1 / JOULES_PER_KWH),
            6,
        );
    }
    map.insert("up".into(), json!(on_off(snap.up)));
    map.insert("problem".into(), json!(on_off(!snap.active.is_empty())));
    let anomalies: Map<String, Value> = status
        .rules
        .iter()
        .map(|rule: Rule| {
            (
                rule.as_str().to_string(),
                json!(on_off(snap.active.contains(rule))),
            )
        })
        .collect();
    map.insert("anomalies".into(), Value::Object(anomalies));
    Value::Object(map).to_string()
}

/// The state of the battery a sensor measures, if it measures one: its topic and payload.
pub(crate) fn battery_state(names: &Names, status: &SensorStatus) -> Option<(String, String)> {
    let info = status.battery.as_ref()?;
    let b = status.snapshot().battery?;
    let mut map = Map::new();
    put(
        &mut map,
        "state_of_charge",
        b.state_of_charge.map(|s| s * 100.0),
        2,
    );
    put(
        &mut map,
        "time_to_go",
        b.time_to_go_seconds.map(|t| t / 60.0),
        0,
    );
    map.insert("synchronized".into(), json!(on_off(b.synchronized())));
    Some((
        names.battery_state(&info.name),
        Value::Object(map).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn names() -> Names {
        Names {
            prefix: "power-monitord/pi".into(),
            discovery_prefix: "homeassistant".into(),
            node: "power_monitord_pi".into(),
            device_name: "power-monitord pi".into(),
            expire_after: 30,
        }
    }

    #[test]
    fn entities_carry_home_assistants_classes() {
        let config = Config::from_toml(
            Path::new("t.toml"),
            "[[sensor]]\nname = \"bank\"\ndriver = \"simulated\"\n[sensor.anomaly]\nmax_power_watts = 10.0\n\
             [[battery]]\nname = \"house\"\nsensor = \"bank\"\ncapacity_ah = 100.0\n",
        )
        .unwrap();
        let status = SensorStatus::new(
            &config.sensors[0],
            crate::anomaly::RuleSet::default(),
            Default::default(),
        );
        let all = sensor_discovery(&names(), &status);
        let find = |object: &str| {
            let d = all
                .iter()
                .find(|d| d.topic.contains(&format!("/{object}/")))
                .unwrap_or_else(|| panic!("{object}"));
            (
                d.topic.clone(),
                serde_json::from_str::<Value>(&d.payload).unwrap(),
            )
        };
        let (topic, energy) = find("bank_energy");
        assert_eq!(
            topic,
            "homeassistant/sensor/power_monitord_pi/bank_energy/config"
        );
        assert_eq!(energy["state_class"], "total_increasing");
        assert_eq!(energy["unit_of_measurement"], "kWh");
        assert_eq!(energy["unique_id"], "power_monitord_pi_bank_energy");
        assert_eq!(energy["value_template"], "{{ value_json.energy }}");
        assert_eq!(
            energy["availability_topic"],
            "power-monitord/pi/availability"
        );
        assert_eq!(energy["device"]["identifiers"][0], "power_monitord_pi");
        let (topic, up) = find("bank_up");
        assert!(topic.starts_with("homeassistant/binary_sensor/"));
        assert_eq!(up["device_class"], "connectivity");
        let (_, soc) = find("battery_house_state_of_charge");
        assert_eq!(
            (
                soc["device_class"].as_str(),
                soc["unit_of_measurement"].as_str()
            ),
            (Some("battery"), Some("%"))
        );
        // Unique ids are unique.
        let mut ids: Vec<String> = all
            .iter()
            .map(|d| serde_json::from_str::<Value>(&d.payload).unwrap()["unique_id"].to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        // A state before any reading: down, energy from the saved total, nothing made up,
        // and every key a template reads is there (null: unknown).
        status.exported.energy_joules.raise_to(3.6e6);
        let state: Value = serde_json::from_str(&sensor_state(&status)).unwrap();
        assert_eq!(state["up"], "OFF");
        assert_eq!(state["energy"], 1.0);
        let keys: Vec<String> = all
            .iter()
            .filter(|d| d.topic.contains("/bank_"))
            .map(|d| {
                let config: Value = serde_json::from_str(&d.payload).unwrap();
                let template = config["value_template"].as_str().unwrap().to_string();
                template["{{ value_json.".len()..template.len() - " }}".len()].to_string()
            })
            .collect();
        assert!(keys.contains(&"power".to_string()), "{keys:?}");
        for key in keys {
            assert!(state.get(&key).is_some(), "{key} missing from {state}");
        }
        assert_eq!(state["power"], Value::Null);
    }

    /// The simulated sensor "bank" with every anomaly rule on (and `more` of the file after it).
    fn bank_with_every_rule(more: &str) -> (Config, std::sync::Arc<SensorStatus>) {
        let text = format!("[[sensor]]\nname = \"bank\"\ndriver = \"simulated\"\n{more}");
        let config = Config::from_toml(Path::new("t.toml"), &text).unwrap();
        let mut rules = crate::anomaly::RuleSet::default();
        for rule in crate::anomaly::Rule::ALL {
            rules.insert_if(rule, true);
        }
        let status = SensorStatus::new(&config.sensors[0], rules, Default::default());
        (config, status)
    }

    #[test]
    fn one_problem_flag_per_sensor_with_its_rules_as_attributes() {
        let (config, status) = bank_with_every_rule("");
        let all = sensor_discovery(&names(), &status);
        // power, energy, voltage, current, up, problem.
        assert_eq!(
            all.len(),
            6,
            "{:?}",
            all.iter().map(|d| &d.topic).collect::<Vec<_>>()
        );
        let problem = all
            .iter()
            .find(|d| d.topic.contains("/bank_problem/"))
            .unwrap();
        let flag: Value = serde_json::from_str(&problem.payload).unwrap();
        assert_eq!(flag["device_class"], "problem");
        assert_eq!(
            flag["json_attributes_template"],
            "{{ value_json.anomalies | tojson }}"
        );
        let state: Value = serde_json::from_str(&sensor_state(&status)).unwrap();
        assert_eq!(state["problem"], "OFF");
        assert_eq!(
            state["anomalies"].as_object().unwrap().len(),
            crate::anomaly::Rule::ALL.len()
        );
        // Without rules, no problem flag.
        let plain = SensorStatus::new(&config.sensors[0], Default::default(), Default::default());
        assert_eq!(sensor_discovery(&names(), &plain).len(), 5);
    }

    #[test]
    fn a_gone_sensors_cleanup_empties_every_config_it_announced() {
        let (_, status) = bank_with_every_rule(
            "[[battery]]\nname = \"house\"\nsensor = \"bank\"\ncapacity_ah = 100.0\n",
        );
        let cleanup = sensor_discovery_topics(&names(), "bank");
        let announced: Vec<String> = sensor_discovery(&names(), &status)
            .into_iter()
            .map(|d| d.topic)
            .filter(|t| !t.contains("/battery_"))
            .collect();
        assert!(announced.len() > 6, "{announced:?}");
        for topic in &announced {
            assert!(cleanup.contains(topic), "{topic} is not cleaned up");
        }
    }
}
