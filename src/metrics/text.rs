//! The text exposition format, written straight from the series' atomics.
//!
//! The `prometheus` crate's `gather` copies every series into protobuf messages (label names
//! and values as fresh strings) before its encoder formats them, a few hundred allocations
//! for a node of 16 sensors and most of the cost of a scrape. The families with a series per
//! sensor or battery are written here instead, straight from the snapshots; the parity test
//! (tests/exposition.rs) checks that the result is line for line what the crate's encoder
//! writes.

use std::io::Write;

/// A metric family's kind, as its `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only rises.
    Counter,
}

/// A family being written: its header goes out before its first series, so a family without
/// series is left out, as the crate's `gather` leaves it out.
pub(crate) struct Family<'a> {
    out: &'a mut Vec<u8>,
    name: &'a str,
    help: &'a str,
    kind: Kind,
    started: bool,
}

impl<'a> Family<'a> {
    /// The family `name` of `kind`, written to `out`.
    pub(crate) fn new(
        out: &'a mut Vec<u8>,
        (name, help): (&'a str, &'a str),
        kind: Kind,
    ) -> Family<'a> {
        Family {
            out,
            name,
            help,
            kind,
            started: false,
        }
    }

    fn start(&mut self) {
        if !self.started {
            header(self.out, self.name, self.help, self.kind);
            self.started = true;
        }
    }

    /// A series with label pairs given as names and values.
    pub(crate) fn sample_pairs<'p>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'p str, &'p str)>,
        value: f64,
    ) {
        self.start();
        sample_pairs(self.out, self.name, pairs, value);
    }
}

/// A family's `# HELP` and `# TYPE` lines.
fn header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    escape(out, help, false);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(match kind {
        Kind::Gauge => b" gauge\n",
        Kind::Counter => b" counter\n",
    });
}

/// A series with label pairs given as names and values, escaped as they are written.
fn sample_pairs<'a>(
    out: &mut Vec<u8>,
    name: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    let mut first = true;
    for (label_name, label_value) in pairs {
        out.push(if first { b'{' } else { b',' });
        first = false;
        label(out, label_name, label_value);
    }
    if !first {
        out.push(b'}');
    }
    out.push(b' ');
    number(out, value);
    out.push(b'\n');
}

/// A label pair, `name="value"`, the value escaped.
pub(crate) fn label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape(out, value, true);
    out.push(b'"');
}

/// A sample value as the format spells it: `NaN`, `+Inf`, `-Inf`, else the shortest decimal
/// that reads back as the same float.
fn number(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if value == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{value}");
    }
}

/// Escape backslash and newline (and the double quote, in a label value).
fn escape(out: &mut Vec<u8>, text: &str, quote: bool) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_are_spelled_as_the_format_says() {
        for (value, spelled) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (0.0, "0"),
            (-0.5, "-0.5"),
            (1e21, "1000000000000000000000"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(text(|o| number(o, value)), spelled);
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            text(|o| sample_pairs(o, "m", [("sensor", "a\"b\\c\nd")], 1.0)),
            "m{sensor=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
        assert_eq!(
            text(|o| header(o, "m", "say \"x\"\\\n", Kind::Counter)),
            "# HELP m say \"x\"\\\\\\n\n# TYPE m counter\n"
        );
        assert_eq!(
            text(|o| sample_pairs(o, "m", [("k", "v")], 2.0)),
            "m{k=\"v\"} 2\n"
        );
        assert_eq!(
            text(|o| sample_pairs(o, "m", [("k", "v"), ("s", "1")], 2.0)),
            "m{k=\"v\",s=\"1\"} 2\n"
        );
    }
}
