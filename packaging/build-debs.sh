#!/usr/bin/env bash
# Builds the Debian packages for every Raspberry Pi and for x86_64, on an x86_64 Debian machine:
#
#   packaging/build-debs.sh [--revision N] [amd64] [arm64] [armhf]
#
# writes target/debs/power-monitord_<version>-<N>_<arch>.deb (revision 1 and all three
# architectures unless told otherwise):
#   amd64  x86_64 PCs and servers
#   arm64  64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W, CM3/4/5)
#   armhf  32-bit Raspberry Pi OS on every Pi, ARMv6 with VFPv2 (Pi 1, Zero, Zero W) and up
# Every binary runs on glibc 2.31 or newer. What it needs is installed on first use (see
# packaging/toolchain.sh): Debian packages through apt-get (with sudo when not root), zig, and
# cargo-zigbuild and cargo-deb through cargo. Rust itself comes from rustup (README.md).
# Cold, a package takes 2-4 minutes on two cores; a second revision of a built one, seconds.
set -eEuo pipefail
# A command that fails says where.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
# shellcheck source=packaging/toolchain.sh
. packaging/toolchain.sh

usage() { sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
revision=1
archs=()
while [ $# -gt 0 ]; do
  case $1 in
    --revision) revision=${2:?--revision needs a number}; shift 2 ;;
    -h | --help) usage ;;
    amd64 | arm64 | armhf) archs+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 armhf)

toolchain_setup
mkdir -p target/debs
built=()
for arch in "${archs[@]}"; do
  target=$(rust_target "$arch")
  echo "== $arch ($target)"
  cross_build "$target"
  deb=target/debs/power-monitord_${VERSION}-${revision}_${arch}.deb
  # The release profile strips the binary already.
  CARGO_TARGET_DIR=$(cross_target_dir "$target") cargo deb --quiet --target "$target" \
    --no-build --no-strip --deb-revision "$revision" --output "$deb" >/dev/null
  built+=("$deb")
done

echo
for deb in "${built[@]}"; do
  tmp=$(mktemp -d)
  dpkg-deb -x "$deb" "$tmp"
  glibc=$(objdump -T "$tmp/usr/bin/power-monitord" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  printf '%s  %s KiB, binary %s KiB, newest symbol %s\n' "$deb" "$(($(stat -c %s "$deb") / 1024))" \
    "$(($(stat -c %s "$tmp/usr/bin/power-monitord") / 1024))" "$glibc"
  rm -rf "$tmp"
done
