//! Where a configuration mistake is: the file, line, column and key, with the line quoted and
//! a caret under the value.
//!
//! Checks speak in key paths ([`KeyPath`], `sensor[1].anomaly.max_power_watts`); the paths
//! are located in the parsed document afterwards ([`locate`]), so the config types stay free
//! of span bookkeeping.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}{}", path.display(), read_hint(path, source))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read, and is wrong.
    #[error("invalid configuration\n{0}")]
    Invalid(Box<Diagnostic>),
}

fn read_hint(path: &Path, source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::NotFound if path == Path::new(super::DEFAULT_CONFIG_PATH) => {
            "; the package installs it, or give another file with --config PATH"
        }
        std::io::ErrorKind::NotFound => "; check the path given with --config",
        _ => "",
    }
}

impl ConfigError {
    #[cfg(test)]
    /// The diagnostic, for a config that was read but is wrong.
    pub(crate) fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            ConfigError::Read { .. } => None,
        }
    }
}

/// One mistake in a config file, with its position.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The file.
    pub(crate) file: PathBuf,
    /// 1-based.
    pub(crate) line: usize,
    /// 1-based, in characters.
    pub(crate) column: usize,
    /// The key path, e.g. `sensor[1].address`; empty for a syntax error outside any key.
    pub(crate) key: String,
    /// What is wrong and what was expected.
    pub(crate) message: String,
    source_line: String,
    caret_len: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        writeln!(f, "{}", self.message)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "{:gutter$} | {pad}{}",
            "",
            "^".repeat(self.caret_len.max(1))
        )
    }
}

impl Diagnostic {
    /// The mistake at byte range `span` of `text`.
    pub(crate) fn new(
        file: &Path,
        text: &str,
        span: Range<usize>,
        key: String,
        message: String,
    ) -> Self {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let end = floor_char_boundary(text, span.end.clamp(start, line_end));
        let caret_len = text[start..end].chars().count();
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            key,
            message,
            source_line,
            caret_len,
        }
    }
}

/// The nearest character boundary at or before `at`.
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A key path into the document, e.g. `sensor[1].anomaly.max_power_watts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// Parse `a.b[2].c`.
    pub(crate) fn parse(text: &str) -> KeyPath {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (key, rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() && key != "?" {
                segs.push(Seg::Key(key.to_string()));
            }
            for idx in rest.split('[').filter(|s| !s.is_empty()) {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    segs.push(Seg::Index(i));
                }
            }
        }
        KeyPath(segs)
    }

    /// `self` followed by `rest`.
    pub(crate) fn join(mut self, rest: &KeyPath) -> KeyPath {
        self.0.extend(rest.0.iter().cloned());
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A mistake found by a check: at which key, and what is wrong and expected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invalid {
    /// Where, relative to the table the check was given.
    pub(crate) key: KeyPath,
    /// What is wrong, and what was expected.
    pub(crate) message: String,
}

/// The result of a check.
pub(crate) type Check = Result<(), Invalid>;

/// A mistake at `key` (a path relative to the table being checked).
pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: KeyPath::parse(key),
        message: message.into(),
    }
}

impl Invalid {
    /// The same mistake, seen from the table that holds this one at `prefix`.
    pub(crate) fn within(self, prefix: &str) -> Invalid {
        Invalid {
            key: KeyPath::parse(prefix).join(&self.key),
            message: self.message,
        }
    }

    /// The message, prefixed (e.g. with the sensor's name).
    pub(crate) fn said_of(mut self, subject: &str) -> Invalid {
        self.message = format!("{subject}: {}", self.message);
        self
    }
}

/// The span of the deepest element of `path` present in the document: the value itself when
/// it exists, else the table that should have held it.
pub(crate) fn locate(doc: &toml::Spanned<DeTable<'_>>, path: &KeyPath) -> Range<usize> {
    let mut span = 0..0;
    let mut value: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for seg in &path.0 {
        let next = match (seg, table, value) {
            (Seg::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(key, v)| (key.span(), v)),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((key_span, v)) = next else { break };
        // Point at the value of a scalar, at the key (or header) of a table.
        span = match v.get_ref() {
            DeValue::Table(_) => key_span,
            _ => v.span(),
        };
        value = Some(v.get_ref());
        table = v.get_ref().as_table();
    }
    span
}

/// `foo` from "... `foo` ..." after `marker`.
pub(crate) fn quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &message[message.find(marker)? + marker.len()..];
    Some(&rest[..rest.find('`')?])
}

/// serde's messages, said the way a person editing a config file needs them.
pub(crate) fn explain_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("required key {rest} is missing");
    }
    // serde names Rust types; a person editing a file thinks in numbers.
    [
        ("u8", "an integer from 0 to 255"),
        ("u16", "an integer from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number of at least 0"),
        ("i64", "a whole number"),
        ("f64", "a number"),
    ]
    .iter()
    .fold(message.to_string(), |m, (rust, words)| {
        m.replace(&format!("expected {rust}"), &format!("expected {words}"))
    })
}

/// For a syntax error, the key of the line it is on (`key = value` lines), if any.
pub(crate) fn key_on_line(text: &str, at: usize) -> String {
    let at = floor_char_boundary(text, at.min(text.len()));
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    match line.split_once('=') {
        Some((k, _)) if !k.trim_start().starts_with('[') && !k.trim().is_empty() => {
            k.trim().to_string()
        }
        _ => String::new(),
    }
}
