use super::*;

fn average(current: f64, voltage: f64) -> Average {
    Average {
        samples: 100,
        current,
        current_sd: 0.0,
        voltage,
        voltage_sd: 0.0,
    }
}

fn refused(result: Result<Outcome, CalibrateError>, needle: &str) {
    match result {
        Err(e) => assert!(e.to_string().contains(needle), "{needle:?} missing: {e}"),
        Ok(o) => panic!("not refused: {o:?}"),
    }
}

const LSB: f64 = 25e-6;

#[test]
fn a_zero_then_a_current_make_offset_and_gain() {
    // Reads 0.5 mA with no load, and 1.0285 A where the meter says 1 A.
    let zero = Reference {
        zero: true,
        ..Reference::default()
    };
    let first = compute(Trim::NONE, &average(0.0005, 12.0), &zero, 3.2, LSB).unwrap();
    assert!((first.trim.current_offset_amps - 0.0005).abs() < 1e-12);
    assert_eq!(first.trim.current_gain, 1.0);
    let at_load = Reference {
        current: Some(1.0),
        voltage: Some(12.0),
        zero: false,
    };
    let second = compute(first.trim, &average(1.0285, 12.18), &at_load, 3.2, LSB).unwrap();
    let t = second.trim;
    assert!((t.current_gain - 1.0 / 1.028).abs() < 1e-12, "{t:?}");
    // Both points come out right.
    assert!(t.current(0.0005).abs() < 1e-12);
    assert!((t.current(1.0285) - 1.0).abs() < 1e-12);
    assert!((t.voltage(12.18) - 12.0).abs() < 1e-12);
    assert!(second.current_gain_error.unwrap() > 0.0);
}

#[test]
fn nonsense_is_refused_with_a_reason() {
    let current = |a| Reference {
        current: Some(a),
        ..Reference::default()
    };
    refused(
        compute(Trim::NONE, &average(1.0, 12.0), &current(-1.0), 3.2, LSB),
        "opposite signs",
    );
    refused(
        compute(Trim::NONE, &average(1.0, 12.0), &current(1.2), 3.2, LSB),
        "more than 10 % off",
    );
    refused(
        compute(Trim::NONE, &average(0.001, 12.0), &current(0.001), 3.2, LSB),
        "too close to zero for a gain",
    );
    let zero = Reference {
        zero: true,
        ..Reference::default()
    };
    refused(
        compute(Trim::NONE, &average(0.5, 12.0), &zero, 3.2, LSB),
        "is the load really disconnected?",
    );
    let volts = Reference {
        voltage: Some(12.0),
        ..Reference::default()
    };
    refused(
        compute(Trim::NONE, &average(1.0, 0.1), &volts, 3.2, LSB),
        "at least 0.5 V",
    );
}

fn block() -> Block {
    Block {
        trim: Trim {
            current_gain: 1.027_734_1,
            current_offset_amps: 0.000_51,
            voltage_gain: 0.985_2,
        },
        reference: Reference {
            current: Some(2.031),
            voltage: Some(12.512),
            zero: false,
        },
        date: "2026-12-06".into(),
    }
}

#[test]
fn writing_keeps_every_comment_and_blank_line_of_the_shipped_file() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.toml"))
            .unwrap();
    let written = with_calibration(&shipped, "battery", &block()).unwrap();
    // Only lines added, none changed or lost, in order.
    let mut old = shipped.lines().peekable();
    let mut added = Vec::new();
    for line in written.lines() {
        if old.peek() == Some(&line) {
            old.next();
        } else {
            added.push(line);
        }
    }
    assert_eq!(
        old.next(),
        None,
        "a line of the shipped file was lost:\n{written}"
    );
    added.sort_unstable();
    let mut expected = [
            "",
            "# calibrated 2026-12-06 against 2.031 A, 12.512 V on a reference meter (power-monitord calibrate)",
            "[sensor.calibration]",
            "current_gain = 1.027734",
            "current_offset_amps = 0.00051",
            "voltage_gain = 0.9852",
        ];
    expected.sort_unstable();
    assert_eq!(added, expected, "{written}");
    // What it wrote loads, with the trims.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &written).unwrap();
    let config = Config::load(&path).unwrap();
    let trim = config.sensors[0].calibration;
    assert!((trim.current_gain - 1.027734).abs() < 1e-12, "{trim:?}");
    // A second calibration replaces the first, comment and all.
    let mut again = block();
    again.trim.current_gain = 1.01;
    let twice = with_calibration(&written, "battery", &again).unwrap();
    assert_eq!(twice.matches("[sensor.calibration]").count(), 1, "{twice}");
    assert_eq!(twice.matches("# calibrated").count(), 1, "{twice}");
    assert!(twice.contains("current_gain = 1.01\n"), "{twice}");
}

#[test]
fn the_current_gain_goes_into_the_calibration_register_as_equation_6_says() {
    let register = |gain: &str| {
        let text = format!(
            "[[sensor]]\nname = \"a\"\nshunt_ohms = 0.1\nmax_current_amps = 3.2\n[sensor.calibration]\ncurrent_gain = {gain}\n"
        );
        let config = Config::from_toml(Path::new("t.toml"), &text).unwrap();
        let s = &config.sensors[0];
        let crate::config::ChipSetup::Ina219(setup) = *s.setup() else {
            panic!("an INA219")
        };
        crate::sensor::ina219::ChipSettings::new(s, setup)
            .calibration
            .register
    };
    // Cal = 0.04096 / (Current_LSB × R) = 4194 for 3.2 A through 0.1 Ω (Current_LSB =
    // 3.2 A / 2^15); Corrected_Cal = trunc(Cal × measured / reported), bit 0 void.
    let nominal = register("1.0");
    assert_eq!(nominal, 4194);
    for (gain, ratio) in [("1.0277", 1.0277), ("0.95", 0.95)] {
        let corrected = (f64::from(nominal) * ratio).trunc() as u16 & !1;
        assert!(
            register(gain).abs_diff(corrected) <= 2,
            "{gain}: {}",
            register(gain)
        );
    }
}
