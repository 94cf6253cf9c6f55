//! Logs: to journald when systemd connected stderr to it, else to stderr. `RUST_LOG`
//! overrides the configured level, also across reloads.
//!
//! journald priorities are the syslog ones: error 3, warning 4, info 6, debug 7. The journal
//! logger maps `log`'s Info to 5 (notice), which would put every routine line in
//! `journalctl -p notice`; [`Priorities`] hands it each record one level down from Info on,
//! so Info lands at 6 and Debug and Trace at 7. Structured fields (SENSOR=, RULE=, VALUE=,
//! KIND=) pass through.

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogLevel;

/// The level `RUST_LOG` asks for, if it is set and is a plain level.
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Set up logging at `level` (unless `RUST_LOG` says otherwise). Called once per process.
pub fn init(level: LogLevel) {
    let rust_log = rust_log();
    if systemd_journal_logger::connected_to_journal() {
        let journal = systemd_journal_logger::JournalLog::new()
            .map(|j| j.with_syslog_identifier("power-monitord".into()));
        if let Ok(journal) = journal {
            if log::set_boxed_logger(Box::new(Priorities(journal))).is_ok() {
                set_level(level);
                return;
            }
        }
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level.to_filter());
    if let Some(spec) = rust_log {
        builder.parse_filters(&spec);
    }
    let _ = builder.try_init();
}

/// Change the level (a reload); `RUST_LOG`, when it names a level, still wins.
pub fn set_level(level: LogLevel) {
    let max = rust_log()
        .and_then(|s| s.parse::<LevelFilter>().ok())
        .unwrap_or(level.to_filter());
    log::set_max_level(max);
}

/// The journal logger with syslog's priorities.
struct Priorities<L>(L);

/// The level whose journal priority is the syslog one for `level`.
fn journal_level(level: Level) -> Level {
    match level {
        Level::Error => Level::Error,
        Level::Warn => Level::Warn,
        Level::Info => Level::Debug,
        Level::Debug | Level::Trace => Level::Trace,
    }
}

impl<L: Log> Log for Priorities<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        self.0.log(
            &Record::builder()
                .args(*record.args())
                .level(journal_level(record.level()))
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .key_values(record.key_values())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A record as the inner logger got it: level, message, fields.
    type Seen = (Level, String, Vec<(String, String)>);

    /// Records what the inner logger is handed.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Seen>>);

    impl Log for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &Record<'_>) {
            struct Fields(Vec<(String, String)>);
            impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
                fn visit_pair(
                    &mut self,
                    key: log::kv::Key<'kvs>,
                    value: log::kv::Value<'kvs>,
                ) -> Result<(), log::kv::Error> {
                    self.0.push((key.to_string(), value.to_string()));
                    Ok(())
                }
            }
            let mut fields = Fields(Vec::new());
            let _ = record.key_values().visit(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string(), fields.0));
        }
        fn flush(&self) {}
    }

    /// systemd-journal-logger writes Error 3, Warn 4, Info 5, Debug 6, Trace 7: one level down
    /// from Info gives error 3, warning 4, info 6, debug 7.
    #[test]
    fn levels_reach_the_journal_at_syslog_priorities() {
        let logger = Priorities(Capture::default());
        log::set_max_level(LevelFilter::Trace);
        for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
            logger.log(
                &Record::builder()
                    .args(format_args!("x"))
                    .level(level)
                    .key_values(&[("sensor", "ac001")])
                    .build(),
            );
        }
        let seen = logger.0 .0.lock().unwrap();
        let levels: Vec<Level> = seen.iter().map(|(l, _, _)| *l).collect();
        assert_eq!(
            levels,
            [Level::Error, Level::Warn, Level::Debug, Level::Trace]
        );
        assert_eq!(seen[2].2, [("sensor".to_string(), "ac001".to_string())]);
    }
}
