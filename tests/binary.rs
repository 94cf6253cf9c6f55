//! What the built daemon is made of, where it decides its resident memory: the libraries it
//! loads.

mod common;

use std::process::Command;

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
