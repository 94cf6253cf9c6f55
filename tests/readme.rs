//! The README's "Try it without hardware" path, run as written: the daemon command of its first
//! block (on a free port, with a state directory of its own), then every `$ command` of its
//! examples, whose output must hold every line the README shows (`...` stands for lines left
//! out). `./target/release/power-monitord` is the binary under test; the install and build lines
//! (apt-get, rustup, cargo) are the reader's, not the test's.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");
const BINARY: &str = "./target/release/power-monitord";

/// The section's shell blocks.
fn try_it_blocks() -> Vec<Vec<String>> {
    let start = README
        .find("## Try it without hardware")
        .expect("the section");
    let section = &README[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), text) => block.push(text.to_string()),
            _ => {}
        }
    }
    blocks
}

/// `$ command` lines and the output lines shown after each.
fn examples(blocks: &[Vec<String>]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for block in blocks {
        for line in block {
            if let Some(command) = line.strip_prefix("$ ") {
                out.push((command.to_string(), Vec::new()));
            } else if let Some((_, shown)) = out.last_mut() {
                if block.iter().any(|l| l.starts_with("$ ")) {
                    shown.push(line.clone());
                }
            }
        }
    }
    out
}

fn shell(command: &str, port: u16) -> (String, bool) {
    let command = command
        .replace(BINARY, env!("CARGO_BIN_EXE_power-monitord"))
        .replace("localhost:9723", &format!("127.0.0.1:{port}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn the_try_it_path_works_as_written() {
    let blocks = try_it_blocks();
    // The daemon, as the README starts it.
    let daemon_line = blocks
        .iter()
        .flatten()
        .find(|l| l.starts_with(BINARY) && l.contains("--listen"))
        .expect("the daemon command")
        .clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = tempfile::tempdir().unwrap();
    let args: Vec<String> = daemon_line[BINARY.len()..]
        .split_whitespace()
        .map(|a| a.replace("127.0.0.1:9723", &format!("127.0.0.1:{port}")))
        .collect();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_power-monitord"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STATE_DIRECTORY", state.path())
        .env("RUNTIME_DIRECTORY", state.path().join("run"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while shell("curl -s localhost:9723/healthz", port).0.trim() != "ok" {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let examples = examples(&blocks);
    assert!(examples.len() >= 5, "{examples:?}");
    let mut failures = Vec::new();
    for (command, shown) in &examples {
        let (output, ok) = shell(command, port);
        if !ok {
            failures.push(format!("{command}: failed\n{output}"));
            continue;
        }
        let lines: Vec<&str> = output.lines().collect();
        for expected in shown.iter().filter(|l| l.trim() != "...") {
            if !lines.contains(&expected.as_str()) {
                failures.push(format!("{command}: no line {expected:?} in\n{output}"));
            }
        }
    }
    common::signal(daemon.id(), libc::SIGTERM);
    let _ = daemon.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
