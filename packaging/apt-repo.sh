#!/usr/bin/env bash
# Makes a signed apt repository of the packages, for a fleet: publish the directory on any
# static web server, add it to each Pi once, and `apt-get upgrade` keeps them all current.
#
#   packaging/apt-repo.sh --key KEY [--out DIR] [DEB...]
#
# KEY: the gpg key that signs it (an id, fingerprint or e-mail address in your keyring, or
# GNUPGHOME's); DIR: target/apt-repo unless told; DEBs: target/debs/*.deb unless told. Run it
# again with newer packages: they join the older ones in the pool, and apt takes the newest.
#
#   DIR/power-monitord.gpg                      the public key, for /usr/share/keyrings/
#   DIR/pool/main/p/power-monitord/*.deb
#   DIR/dists/stable/InRelease, Release, Release.gpg
#   DIR/dists/stable/main/binary-{amd64,arm64,armhf}/Packages, Packages.gz
#
# On each machine (README.md, "Install on a Raspberry Pi"):
#   curl -fsSL https://HOST/PATH/power-monitord.gpg | sudo tee /usr/share/keyrings/power-monitord.gpg >/dev/null
#   echo "deb [signed-by=/usr/share/keyrings/power-monitord.gpg] https://HOST/PATH stable main" |
#     sudo tee /etc/apt/sources.list.d/power-monitord.list
#   sudo apt-get update && sudo apt-get install power-monitord
#
# Uses Debian's own tools: apt-ftparchive (apt-utils) and gpg, installed when missing.
set -eEuo pipefail
# A command that fails says where.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=packaging/toolchain.sh
. "$top/packaging/toolchain.sh"

usage() { sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
key=
out=$top/target/apt-repo
debs=()
while [ $# -gt 0 ]; do
  case $1 in
    --key) key=${2:?--key needs a key}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage 2 ;;
    *) debs+=("$1"); shift ;;
  esac
done
[ -n "$key" ] || { echo "--key is required: the gpg key that signs the repository" >&2; usage 2; }
if [ ${#debs[@]} -eq 0 ]; then
  shopt -s nullglob
  debs=("$top"/target/debs/*.deb)
fi
[ ${#debs[@]} -gt 0 ] || { echo "no packages: run packaging/build-debs.sh first" >&2; exit 1; }
need_debs apt-ftparchive:apt-utils gpg:gpg
gpg --batch --list-secret-keys "$key" >/dev/null 2>&1 ||
  { echo "no secret key $key in the keyring${GNUPGHOME:+ $GNUPGHOME}" >&2; exit 1; }

pool=pool/main/p/power-monitord
mkdir -p "$out/$pool"
for deb in "${debs[@]}"; do cp "$deb" "$out/$pool/"; done

cd "$out"
archs="amd64 arm64 armhf"
for arch in $archs; do
  dir=dists/stable/main/binary-$arch
  mkdir -p "$dir"
  apt-ftparchive --arch "$arch" packages pool >"$dir/Packages"
  gzip -9nc "$dir/Packages" >"$dir/Packages.gz"
done
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=power-monitord \
  -o APT::FTPArchive::Release::Label=power-monitord \
  -o APT::FTPArchive::Release::Suite=stable \
  -o APT::FTPArchive::Release::Codename=stable \
  -o "APT::FTPArchive::Release::Architectures=$archs" \
  -o APT::FTPArchive::Release::Components=main \
  -o "APT::FTPArchive::Release::Description=power-monitord for Debian 11 and newer, Raspberry Pi OS bullseye and newer" \
  release dists/stable >Release.new
mv Release.new dists/stable/Release
gpg --batch --yes --local-user "$key" --clearsign -o dists/stable/InRelease dists/stable/Release
gpg --batch --yes --local-user "$key" --detach-sign -o dists/stable/Release.gpg dists/stable/Release
gpg --batch --yes --export "$key" >power-monitord.gpg

echo "$out: $(find pool -name '*.deb' | wc -l) package(s), signed by $(gpg --batch --with-colons --fingerprint "$key" | awk -F: '$1 == "fpr" { print $10; exit }')"
for arch in $archs; do
  echo "  $arch: $(awk '/^Version:/ { printf "%s ", $2 }' "dists/stable/main/binary-$arch/Packages")"
done
