# shellcheck shell=bash
# Sourced by packaging/build-debs.sh and packaging/test-arm.sh: the toolchain that builds the
# packages on an x86_64 Debian machine, installed on first use.
#
# - Rust from rustup, with the target's standard library from rustup where it has one; where
#   it cannot be downloaded (`rustup target add` fails), the standard library is built from
#   rust-src (`-Zbuild-std`, which stable Rust allows with RUSTC_BOOTSTRAP=1).
# - zig as the C compiler and linker (cargo-zigbuild): one program for every target, with the
#   C library stubs of any glibc release. Every binary is linked against glibc 2.31, so it runs
#   on Debian 11 and Raspberry Pi OS bullseye and everything newer; no per-target cross
#   compiler or sysroot. zig comes from its PyPI wheel (the `ziglang` package), checked against
#   the hash below.
# - cargo-deb for the packages.

ZIG_VERSION=0.17.1
ZIG_WHEEL=ziglang-0.17.1-py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.musllinux_1_1_x86_64.whl
ZIG_WHEEL_SHA256=ea6cc5d87b033cf0aedfbc8f9549a908cae6c50ac31f1698188fa48a74524b54
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0
# The oldest glibc the packages run on: Debian 11, Raspberry Pi OS bullseye, Ubuntu 22.04 (2.35).
GLIBC_FLOOR=2.31
# The package's version (the scripts run from the repository's top).
# shellcheck disable=SC2034 # used by the scripts that source this
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Downloads and the test root file systems, kept between runs.
CACHE=${POWER_MONITORD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/power-monitord}

# Debian architecture -> Rust target.
rust_target() {
  case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    # ARMv6 with VFPv2: the Pi 1, Zero and Zero W, and every later Pi on 32-bit Raspberry Pi
    # OS (armv7-unknown-linux-gnueabihf would die with SIGILL on the ARMv6 boards).
    armhf) echo arm-unknown-linux-gnueabihf ;;
    *) echo "unknown architecture $1 (amd64, arm64 or armhf)" >&2; return 1 ;;
  esac
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages, installed when a command is missing: `need_debs cmd:package ...`.
need_debs() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing ${missing[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# zig on PATH, from the cache or PyPI.
toolchain_zig() {
  local dir=$CACHE/zig-$ZIG_VERSION
  if [ ! -x "$dir/ziglang/zig" ]; then
    need_debs curl:curl python3:python3 sha256sum:coreutils
    local url tmp
    # PyPI's simple index, the one pip reads.
    url=$(curl -fsS "https://pypi.org/simple/ziglang/" | grep -o "href=\"[^\"]*/${ZIG_WHEEL}[#\"]" |
      sed -e 's/^href="//' -e 's/[#"]$//' | head -1)
    [ -n "$url" ] || { echo "$ZIG_WHEEL is not on PyPI's index" >&2; return 1; }
    tmp=$(mktemp -d)
    echo "downloading zig $ZIG_VERSION ($ZIG_WHEEL)" >&2
    curl -fsS -o "$tmp/$ZIG_WHEEL" "$url"
    echo "$ZIG_WHEEL_SHA256  $tmp/$ZIG_WHEEL" | sha256sum --check --quiet
    python3 -m zipfile -e "$tmp/$ZIG_WHEEL" "$tmp/unpacked"
    chmod +x "$tmp/unpacked/ziglang/zig"
    mkdir -p "$CACHE"
    rm -rf "$dir" && mv "$tmp/unpacked" "$dir" && rm -rf "$tmp"
  fi
  PATH=$dir/ziglang:$PATH
}

# A cargo subcommand at a pinned version: `toolchain_cargo_tool cargo-deb 3.8.0`.
toolchain_cargo_tool() {
  local have
  have=$("$1" --version 2>/dev/null | awk '{ print $NF }') || true
  [ "$have" = "$2" ] || cargo install --quiet --locked "$1" --version "$2"
}

# The standard library for a target: from rustup where it has one, else built from source.
# Sets BUILD_STD to the cargo arguments that builds need (empty, or -Zbuild-std).
toolchain_std() {
  BUILD_STD=()
  if [ -d "$(rustc --print sysroot)/lib/rustlib/$1/lib" ]; then return; fi
  if command -v rustup >/dev/null && rustup target add "$1" >/dev/null 2>&1; then return; fi
  rustup component add rust-src >/dev/null 2>&1
  BUILD_STD=(-Zbuild-std)
}

# Everything a build needs, on PATH.
toolchain_setup() {
  need_debs curl:curl python3:python3 cc:build-essential readelf:binutils
  if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null || {
    echo "cargo is missing: install Rust with rustup (see README.md)" >&2
    return 1
  }
  toolchain_zig
  toolchain_cargo_tool cargo-zigbuild "$CARGO_ZIGBUILD_VERSION"
  toolchain_cargo_tool cargo-deb "$CARGO_DEB_VERSION"
}

# Where cargo puts a target's build: builds of the standard library from source get a target
# directory of their own, because they run with RUSTC_BOOTSTRAP=1, which build scripts shared
# by every target notice (proc-macro2's, serde's): sharing one directory would rebuild
# everything at each switch.
cross_target_dir() {
  toolchain_std "$1"
  if [ ${#BUILD_STD[@]} -gt 0 ]; then echo target/build-std; else echo target; fi
}

# A release build of the daemon for a Rust target, linked by zig; a glibc target gets the
# floor's version suffix (`aarch64-unknown-linux-gnu.2.31`). Extra arguments go to cargo. The
# binary is then $(cross_target_dir TARGET)/TARGET/release/power-monitord.
cross_build() {
  local target=$1 suffix='' dir
  shift
  case $target in *-gnu | *-gnueabihf) suffix=.$GLIBC_FLOOR ;; esac
  dir=$(cross_target_dir "$target")
  if [ "$dir" != target ]; then
    echo "no prebuilt standard library for $target here: building it from rust-src" >&2
    CARGO_TARGET_DIR=$dir RUSTC_BOOTSTRAP=1 cargo zigbuild --release --locked \
      --target "$target$suffix" -Zbuild-std "$@"
  else
    cargo zigbuild --release --locked --target "$target$suffix" "$@"
  fi
}
