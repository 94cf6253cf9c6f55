#!/usr/bin/env bash
# Checks the built packages without installing them, each for what its users' systems need:
# the binary is the package's architecture and asks the loader of that architecture; it needs
# no library beyond glibc's and no glibc symbol newer than the floor, which `Depends` states;
# the armhf binary is built for ARMv6 with VFPv2 (attributes; packaging/test-arm.sh runs it);
# lintian --pedantic is clean.
#
#   packaging/check-debs.sh [DEB...]      (default: target/debs/*-1_*.deb, from build-debs.sh)
#
# Needs binutils and lintian (installed when missing).
set -eEuo pipefail
# A command that fails says where.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR
debs=()
for deb in "$@"; do debs+=("$(realpath "$deb")"); done
cd "$(dirname "$0")/.."
# shellcheck source=packaging/toolchain.sh
. packaging/toolchain.sh

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
need_debs readelf:binutils objdump:binutils lintian:lintian

if [ ${#debs[@]} -eq 0 ]; then
  shopt -s nullglob
  debs=(target/debs/power-monitord_*-1_*.deb)
fi
[ ${#debs[@]} -gt 0 ] || fail "no packages: run packaging/build-debs.sh first"

# The newest of two versions: `newer 2.30 2.31` prints 2.31.
newer() { printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1; }

for deb in "${debs[@]}"; do
  arch=$(dpkg-deb -f "$deb" Architecture)
  echo "== $deb"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb -x "$deb" "$tmp"
  bin=$tmp/usr/bin/power-monitord
  [ -f "$bin" ] || fail "$deb has no /usr/bin/power-monitord"

  case $arch in
    amd64) machine='Advanced Micro Devices X86-64' loader=/lib64/ld-linux-x86-64.so.2 ;;
    arm64) machine=AArch64 loader=/lib/ld-linux-aarch64.so.1 ;;
    armhf) machine=ARM loader=/lib/ld-linux-armhf.so.3 ;;
    *) fail "unexpected architecture $arch" ;;
  esac
  have=$(readelf -hW "$bin" | sed -n 's/^ *Machine: *//p')
  [ "$have" = "$machine" ] || fail "$arch package holds a binary for $have"
  interp=$(readelf -lW "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  [ "$interp" = "$loader" ] || fail "the binary asks for the loader $interp, not $loader"
  ok "$machine binary, loader $loader"

  # Every library the binary needs is part of libc6 (libpthread and libdl are separate files
  # before glibc 2.34), so libc6 is its only library dependency.
  needed=$(readelf -dW "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | xargs)
  for lib in $needed; do
    case $lib in libc.so.6 | libpthread.so.0 | libdl.so.2 | ld-linux*) ;;
      *) fail "the binary needs $lib, which is not part of glibc: $needed" ;;
    esac
  done
  newest=$(objdump -T "$bin" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -1)
  [ -n "$newest" ] || fail "no versioned glibc symbols: is this a glibc binary?"
  [ "$(newer "$newest" "$GLIBC_FLOOR")" = "$GLIBC_FLOOR" ] ||
    fail "the binary needs glibc $newest, newer than the floor $GLIBC_FLOOR: $(objdump -T "$bin" |
      grep -E "GLIBC_$newest" | head -5)"
  depends=$(dpkg-deb -f "$deb" Depends)
  [ "$depends" = "adduser, libc6 (>= $GLIBC_FLOOR)" ] ||
    fail "Depends: $depends (expected adduser, libc6 (>= $GLIBC_FLOOR))"
  ok "needs $needed; newest glibc symbol $newest; Depends: $depends"

  # A Pi 5 runs 64-bit Raspberry Pi OS on 16 KiB pages: every segment must sit on a page
  # boundary of the largest page size (64 KiB on arm64).
  if [ "$arch" = arm64 ]; then
    for align in $(readelf -lW "$bin" | awk '$1 == "LOAD" { print $NF }'); do
      [ $((align)) -ge 65536 ] || fail "a segment aligned to $align: $(readelf -lW "$bin" | grep LOAD)"
    done
    ok "segments aligned to 64 KiB (the Pi 5's 16 KiB pages)"
  fi

  if [ "$arch" = armhf ]; then
    attrs=$(readelf -A "$bin")
    grep -Eq 'Tag_CPU_arch: v6(K|KZ)?$' <<<"$attrs" || fail "not built for ARMv6: $attrs"
    if grep -q 'Tag_THUMB_ISA_use' <<<"$attrs"; then
      grep -q 'Tag_THUMB_ISA_use: Thumb-1' <<<"$attrs" || fail "Thumb-2 code: $attrs"
    fi
    grep -q 'Tag_FP_arch: VFPv2' <<<"$attrs" || fail "floating point beyond VFPv2: $attrs"
    ! grep -q 'Tag_Advanced_SIMD_arch' <<<"$attrs" || fail "NEON required: $attrs"
    ok "ARMv6, Thumb-1, VFPv2, no NEON (readelf -A)"
  fi

  # Its own temporary files (lintian leaves some behind) go with the rest of $tmp.
  mkdir "$tmp/lintian"
  if ! TMPDIR=$tmp/lintian lintian --pedantic --fail-on error,warning "$deb" >"$tmp/lintian.log" 2>&1; then
    grep -v 'root privileges' "$tmp/lintian.log" || true
    fail "lintian reports errors or warnings"
  fi
  grep -v 'root privileges' "$tmp/lintian.log" || true
  ok "lintian --pedantic: no errors, no warnings that are not overridden"
  rm -rf "$tmp"
  trap - EXIT
done
echo "PASS: ${#debs[@]} package(s)"
