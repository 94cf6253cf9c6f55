//! What the built daemon is made of, where it decides its resident memory: the libraries it
//! loads, and whether link/hot-functions.txt (the functions laid out together, see
//! tools/cc-ordered) still names its functions.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// `readelf` (binutils, there wherever `cc` is) on the daemon.
fn readelf(args: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(common::BIN)
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "readelf {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A library costs resident memory for as long as the daemon runs: libm.so would add about
/// 330 KiB for exp, log and sin, which the `libm` crate provides instead.
#[test]
fn the_binary_loads_no_library_beyond_libc() {
    let dynamic = readelf(&["--dynamic", "--wide"]);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "{dynamic}");
    for library in &needed {
        assert!(
            ["libc.so", "libgcc_s.so", "ld-linux"]
                .iter()
                .any(|allowed| library.starts_with(allowed)),
            "the daemon needs {library}: {needed:?}"
        );
    }
}

/// A function's name as the list spells it: demangled by `c++filt`, without crate hashes and
/// LLVM's suffixes (what tools/cc-ordered does).
fn keys(symbols: &[&str]) -> BTreeSet<String> {
    let mut child = Command::new("c++filt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("c++filt (binutils)");
    let mut input = child.stdin.take().expect("stdin");
    let names: String = symbols
        .iter()
        .map(|name| format!("{}\n", name.split(".llvm.").next().unwrap_or(name)))
        .collect();
    let writer = std::thread::spawn(move || input.write_all(names.as_bytes()));
    let out = child.wait_with_output().expect("c++filt");
    writer.join().expect("writer").expect("write to c++filt");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(without_hashes)
        .collect()
}

fn is_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `std[1a2b]::io::x::h0123456789abcdef` -> `std::io::x`, as tools/cc-ordered's `sed` does it
/// (which takes `[f64]` for a hash too: a key only has to be the same on both sides).
fn without_hashes(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').map(|at| open + at);
        match close {
            Some(close) if close > open + 1 && is_hex(&rest[open + 1..close]) => {
                key.push_str(&rest[..open]);
                rest = &rest[close + 1..];
            }
            _ => {
                key.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    key.push_str(rest);
    match key.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && is_hex(hash) => path.to_string(),
        _ => key,
    }
}

/// Once the code has moved on from the list, the daemon's functions spread over its whole
/// binary again and its memory grows by a third, which no other test would see: then run
/// tools/link-order.sh. (The test binary is a debug build, which keeps more functions than a
/// release build; every function the list names has one there unless it was renamed.)
#[test]
fn the_layout_list_names_the_daemons_functions() {
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/link/hot-functions.txt"
    ))
    .expect("link/hot-functions.txt");
    let listed: BTreeSet<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(listed.len() > 1000, "{} functions listed", listed.len());
    let symbols = readelf(&["--symbols", "--wide"]);
    let functions: Vec<&str> = symbols
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 8 && fields[3] == "FUNC" && fields[6] != "UND").then(|| fields[7])
        })
        .collect();
    let present = keys(&functions);
    let missing: Vec<&&str> = listed
        .iter()
        .filter(|name| !present.contains(**name))
        .collect();
    assert!(
        missing.len() * 10 <= listed.len(),
        "{} of {} functions in link/hot-functions.txt are gone (run tools/link-order.sh): {:?}",
        missing.len(),
        listed.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn hashes_are_dropped_from_names() {
    assert_eq!(
        without_hashes("<std[e28293b1aa0f68bd]::fs::File>::read::h0123456789abcdef"),
        "<std::fs::File>::read"
    );
    assert_eq!(without_hashes("<[u8]>::len"), "<[u8]>::len");
    assert_eq!(without_hashes("x::<[u8; 16]>"), "x::<[u8; 16]>");
    assert_eq!(without_hashes("<[]>::h0123"), "<[]>::h0123");
}
