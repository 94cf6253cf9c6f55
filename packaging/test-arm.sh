#!/usr/bin/env bash
# The Raspberry Pi packages on the systems they are for, under qemu-user-static:
#
#   sudo packaging/test-arm.sh [arm64] [armhf] [armv6]      (all three when none is named)
#   sudo packaging/test-arm.sh armhf:trixie                  (another Debian release)
#
# arm64, armhf: the package from packaging/build-debs.sh is installed with apt-get into a
#   minimal Debian root of its architecture (arm64: bookworm; armhf: bullseye, the oldest glibc
#   the packages support), its maintainer scripts run; there `check-config` passes on the
#   shipped configuration, the daemon runs as its user on the simulated house, publishing to a
#   Mosquitto on the host by the name `localhost` (resolved through the root's glibc), and its
#   /metrics is scraped from the host and checked with promtool; then remove, and purge, after
#   which the root is as it was before the install.
# armv6: the armhf code runs on the Pi Zero's core. No ARMv6 glibc can be had here (Debian's
#   armhf is ARMv7: its loader dies on the arm1176 model), so:
#   - the packaged binary runs in the bullseye root on a core without NEON, as a Pi Zero's
#     reports (ring, which has NEON code, then chooses it as on the Zero), through a workload
#     (every command, the house, TLS with basic auth, every endpoint, gzip, MQTT, SIGTERM)
#     while qemu logs each of its instructions that runs; any instruction that ARMv6 with
#     VFPv2 does not have fails the test (ARMv7 and ARMv6T2 instructions, Thumb-2, NEON,
#     VFPv3 and later);
#   - the same code built static (arm-unknown-linux-musleabihf: the same compiler settings,
#     musl instead of glibc) runs on qemu's arm1176 model itself, the Pi Zero's core: the
#     commands, and the daemon serving /metrics over TLS.
#
# Needs root, the packages in target/debs (packaging/build-debs.sh), and qemu-user-static,
# debootstrap, curl, openssl (installed when missing); promtool and mosquitto when present.
# The roots come from the Debian mirror once and are kept in $CACHE/roots (packaging/roots.sh).
set -eEuo pipefail
# A command that fails says where.
trap 'echo "FAIL: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
# shellcheck source=packaging/toolchain.sh
. packaging/toolchain.sh
# shellcheck source=packaging/roots.sh
. packaging/roots.sh

need_debs qemu-arm-static:qemu-user-static debootstrap:debootstrap curl:curl openssl:openssl \
  unshare:util-linux

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(arm64 armhf armv6)

# A password for basic auth in the TLS runs, and its bcrypt hash (cost 4).
PASSWORD=s3cret
HASH='$2b$04$tflqIr2YetQEDQnpN0oLZ.yjNmMx3haodJS75ZVZgMpm1HKS49UFW'

# A Mosquitto on the host for the daemons to publish to, when the machine has one.
mqtt_port=
start_mosquitto() {
  local bin
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  [ -x "$bin" ] || { echo "   (no mosquitto: MQTT left out)"; return; }
  mqtt_port=$(free_port)
  "$bin" -p "$mqtt_port" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
}

# The simulated house with MQTT to the host's broker, written to $1.
house_config() {
  cat "$2" >"$1"
  if [ -n "$mqtt_port" ]; then
    printf '\n[mqtt]\nbroker = "mqtt://localhost:%s"\n' "$mqtt_port" >>"$1"
  fi
}

# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN.
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# The address a daemon logged (`listening on http://127.0.0.1:PORT/`).
listen_address() {
  wait_for "$1" 'listening on http' 60 || fail "no listener: $(tail -5 "$1")"
  sed -n 's|.*listening on https\{0,1\}://\([^/]*\)/.*|\1|p' "$1" | head -1
}

# scrape_until_sampled URL CURL-ARGS...: /metrics once every sensor of the house has a sample,
# the energy totals have been saved once and MQTT is connected; leaves it in $work/metrics.
scrape_until_sampled() {
  local url=$1 i
  shift
  for ((i = 0; i < 120; i++)); do
    if curl -fsS "$@" "$url/metrics" >"$work/metrics" 2>/dev/null &&
      [ "$(grep -c '^powermon_sensor_up{.*} 1$' "$work/metrics")" -ge 5 ] &&
      grep -q '^powermon_state_last_persist_timestamp_seconds [1-9]' "$work/metrics" &&
      { [ -z "$mqtt_port" ] || grep -q '^powermon_mqtt_connected 1$' "$work/metrics"; }; then
      return 0
    fi
    sleep 0.5
  done
  fail "not all sampled, saved and connected within 60 s: $(grep -E '^powermon_(sensor_up|state_last|mqtt_connected)' "$work/metrics" 2>/dev/null)"
}

# check_metrics: what a scrape of the house must hold.
check_metrics() {
  local m=$work/metrics
  grep -q "^powermon_build_info{.*version=\"$VERSION\"" "$m" || fail "no build_info for $VERSION"
  for s in ac001 wm002 fr003 pi_5v battery; do
    grep -q "^powermon_energy_joules_total{sensor=\"$s\"}" "$m" || fail "no energy total for $s"
  done
  grep -q '^process_resident_memory_bytes [1-9]' "$m" || fail "no process metrics"
  if [ -n "$mqtt_port" ]; then
    grep -q '^powermon_mqtt_connected 1$' "$m" || fail "not connected to the broker at localhost"
  fi
  if command -v promtool >/dev/null; then
    promtool check metrics <"$m" || fail "promtool check metrics"
  fi
}

# --- a package in a root of its architecture ----------------------------------------------

# The packages installed in a root, sorted.
installed_packages() {
  root_run "$1" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort
}

test_package() {
  local arch=$1 suite=$2 root=$work/root-$1
  local deb=target/debs/power-monitord_${VERSION}-1_${arch}.deb
  [ -f "$deb" ] || fail "$deb is missing: run packaging/build-debs.sh $arch"
  echo "== $arch on Debian $suite: $deb"
  root_make "$suite" "$arch" "$root"
  echo "   $(root_run "$root" dpkg-query -W -f '${Package} ${Version}' libc6)"
  root_snapshot "$root" >"$work/before"
  installed_packages "$root" >"$work/packages-before"

  cp "$deb" "$root/tmp/"
  root_run "$root" apt-get install -y -q "/tmp/${deb##*/}" >"$work/apt.log" 2>&1 ||
    fail "apt-get install: $(tail -20 "$work/apt.log")"
  [ "$(root_run "$root" dpkg-query -W -f '${Status} ${Version}' power-monitord)" = \
    "install ok installed ${VERSION}-1" ] || fail "not installed: $(tail "$work/apt.log")"
  root_run "$root" id -nG power-monitord | tr ' ' '\n' | grep -qx i2c ||
    fail "the user power-monitord is missing or not in group i2c"
  [ -d "$root/var/lib/power-monitord" ] || fail "no state directory"
  ok "apt-get install: user in group i2c, state directory, $(root_run "$root" dpkg-query -W -f '${Installed-Size}' power-monitord) KiB"

  root_run "$root" power-monitord check-config >"$work/check.log" 2>&1 ||
    fail "check-config on the shipped configuration: $(cat "$work/check.log")"
  ok "$(head -1 "$work/check.log")"

  house_config "$root/tmp/house.toml" config/simulated.toml
  root_start "$root" setpriv --reuid=power-monitord --regid=power-monitord --init-groups \
    env STATE_DIRECTORY=/var/lib/power-monitord power-monitord --config /tmp/house.toml \
    --listen 127.0.0.1:0 >"$work/daemon.log" 2>&1
  local pid=$!
  pids+=("$pid")
  local addr
  addr=$(listen_address "$work/daemon.log")
  scrape_until_sampled "http://$addr"
  check_metrics
  [ "$(curl -fsS "http://$addr/healthz")" = ok ] || fail "/healthz"
  # Read whole first: grep -q stops at the first match, and curl, cut off, would fail.
  local gzipped
  gzipped=$(curl -fsS --compressed "http://$addr/metrics") || fail "gzip /metrics"
  grep -q '^powermon_samples_total' <<<"$gzipped" || fail "gzip /metrics"
  local times
  times=$(for _ in $(seq 21); do curl -fsS -o /dev/null -w '%{time_total}\n' "http://$addr/metrics"; done |
    sort -n | sed -n 11p)
  ok "the daemon runs as power-monitord; /metrics scraped from the host ($(grep -c '^powermon_' "$work/metrics") powermon_ series, median of 21 scrapes ${times}s)${mqtt_port:+, MQTT to localhost connected}"

  kill -TERM "$pid"
  wait "$pid" || fail "the daemon did not stop cleanly: $(tail -5 "$work/daemon.log")"
  grep -q '"ac001"' "$root/var/lib/power-monitord/state.json" || fail "no totals saved"
  [ "$(stat -c %u "$root/var/lib/power-monitord/state.json")" = \
    "$(root_run "$root" id -u power-monitord)" ] || fail "state.json not written by the service user"
  ok "SIGTERM: stopped and saved the totals"

  root_run "$root" apt-get remove -y -q power-monitord >"$work/apt.log" 2>&1 ||
    fail "apt-get remove: $(tail "$work/apt.log")"
  [ ! -e "$root/usr/bin/power-monitord" ] || fail "the binary survived remove"
  [ -f "$root/etc/power-monitord/config.toml" ] && [ -f "$root/var/lib/power-monitord/state.json" ] ||
    fail "remove took the configuration or the totals"
  root_run "$root" apt-get purge -y -q power-monitord >"$work/apt.log" 2>&1 ||
    fail "apt-get purge: $(tail "$work/apt.log")"
  rm -f "$root/tmp/${deb##*/}" "$root/tmp/house.toml"
  # Packages apt installed as dependencies (adduser, on a release whose minimal system lacks
  # it) stay, as they do on any system; their files are left out of the comparison.
  local deps
  deps=$(installed_packages "$root" | comm -13 "$work/packages-before" -)
  for p in $deps; do root_run "$root" dpkg -L "$p"; done >"$work/dependency-files"
  local keep='BEGIN { while ((getline f < files) > 0) skip["." f] = 1 }
    { path = ($1 ~ /^\.\//) ? $1 : $2; if (!(path in skip)) print }'
  root_snapshot "$root" | awk -v files="$work/dependency-files" "$keep" >"$work/after"
  awk -v files="$work/dependency-files" "$keep" "$work/before" >"$work/before-kept"
  diff -u "$work/before-kept" "$work/after" >"$work/diff" ||
    fail "purge left the root changed: $(head -40 "$work/diff")"
  ok "remove kept the configuration and totals; purge left the root as before ($(wc -l <"$work/before") paths compared${deps:+; dependencies installed: $(echo $deps)})"
}

# --- ARMv6 --------------------------------------------------------------------------------

# A TLS certificate and a web config with basic auth, in $work.
make_web_config() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/server.key" -out "$work/server.crt" 2>/dev/null
  printf 'tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n' \
    "$work/server.crt" "$work/server.key" "$HASH" >"$work/web.yml"
}

# serve_and_scrape LOG COMMAND...: runs the daemon COMMAND (on the house, TLS and basic auth),
# asks it for every endpoint, then stops it with SIGTERM.
serve_and_scrape() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  local pid=$! addr
  pids+=("$pid")
  addr=$(listen_address "$log")
  local auth=(--cacert "$work/server.crt" -u "prometheus:$PASSWORD")
  scrape_until_sampled "https://$addr" "${auth[@]}"
  check_metrics
  curl -fsS "${auth[@]}" --compressed "https://$addr/metrics" >/dev/null || fail "gzip over TLS"
  for path in / /api/readings /healthz; do
    curl -fsS "${auth[@]}" -o /dev/null "https://$addr$path" || fail "GET $path over TLS"
  done
  [ "$(curl -sS --cacert "$work/server.crt" -u prometheus:wrong -o /dev/null -w '%{http_code}' \
    "https://$addr/metrics")" = 401 ] || fail "a wrong password was not refused"
  kill -TERM "$pid"
  wait "$pid" || fail "the daemon did not stop cleanly: $(tail -5 "$log")"
}

# The instructions of a qemu in_asm log that ARMv6 with VFPv2 lacks, one per line.
not_armv6() {
  awk '/^0x[0-9a-f]+:/ {
    # ARM: one 8-digit word; Thumb: one or two 4-digit halfwords.
    if ($3 ~ /^[0-9a-f][0-9a-f][0-9a-f][0-9a-f]$/) { m = $4; wide = 1 } else { m = $3; wide = 0 }
    ops = $0; sub(/^[^ ]+ +[0-9a-f]+ +([0-9a-f][0-9a-f][0-9a-f][0-9a-f] +)?[^ ]+ */, "", ops)
    bad = ""
    if (wide && m !~ /^blx?$/) bad = "Thumb-2"
    else if (m ~ /^(movw|movt|bfc|bfi|sbfx|ubfx|rbit|mls|ldrht|ldrsbt|ldrsht|strht|pldw|dmb|dsb|isb|sdiv|udiv|smc|dbg|it|cbz|cbnz|tbb|tbh)/) bad = "ARMv6T2/ARMv7"
    else if (m ~ /^(lda|stl|crc32|aes|sha1|sha256|vrint|vsel|vmaxnm|vminnm|vcvt[anpm])/) bad = "ARMv8"
    else if (m ~ /^(vfma|vfms|vfnma|vfnms|vcvtb|vcvtt)/) bad = "VFPv4/half precision"
    else if (m ~ /^(vmov|vcvt)/ && ops ~ /#/) bad = "VFPv3"
    else if (ops ~ /(^|[^a-z0-9])(q[0-9]+|d(1[6-9]|2[0-9]|3[01]))([^0-9]|$)/) bad = "NEON/VFP-D32"
    else if (m ~ /\.([ip](8|16|32|64)|[su](8|16|64))($|\.)/) bad = "NEON"
    else if (m ~ /^(veor|vand|vorr|vorn|vbic|vbsl|vbit|vbif|vswp|vtrn|vzip|vuzp|vrev|vext|vdup|vtbl|vtbx|vld[1-4]|vst[1-4]|vmvn|vpadd|vqadd|vshl|vshr|vsra|vsli|vsri)/) bad = "NEON"
    if (bad != "") print bad ": " $0
  }' "$@"
}

test_armv6() {
  echo "== ARMv6 (the Pi 1, Zero and Zero W)"
  local deb=target/debs/power-monitord_${VERSION}-1_armhf.deb root=$work/root-armv6
  [ -f "$deb" ] || fail "$deb is missing: run packaging/build-debs.sh armhf"
  dpkg-deb -x "$deb" "$work/armhf"
  local bin=$work/armhf/usr/bin/power-monitord house=$work/armhf/usr/share/doc/power-monitord/examples/simulated.toml
  root_make bullseye armhf "$root"
  make_web_config
  house_config "$work/house.toml" "$house"

  # The packaged binary, traced: qemu logs each block of its code the first time it runs.
  local cpu=cortex-a7,neon=off
  local q=(qemu-arm-static -L "$root" -cpu "$cpu")
  "${q[@]}" -d page -D "$work/page.log" "$bin" --version >/dev/null
  local start end
  start=$(awk '$1 == "start_code" { print $2 }' "$work/page.log")
  end=$(awk '$1 == "end_code" { print $2 }' "$work/page.log")
  [ -n "$start" ] && [ -n "$end" ] || fail "qemu did not say where the binary's code is"
  local trace=(-d in_asm -dfilter "$start..$end")
  mkdir -p "$work/trace" "$work/state"
  "${q[@]}" "${trace[@]}" -D "$work/trace/check" "$bin" check-config --config "$work/house.toml" >/dev/null
  "${q[@]}" "${trace[@]}" -D "$work/trace/scan" "$bin" scan --bus virtual-house --config "$work/house.toml" >/dev/null
  "${q[@]}" "${trace[@]}" -D "$work/trace/read" "$bin" read --config "$work/house.toml" --duration 3s >/dev/null
  STATE_DIRECTORY=$work/state serve_and_scrape "$work/traced.log" "${q[@]}" "${trace[@]}" \
    -D "$work/trace/daemon" "$bin" --config "$work/house.toml" --web.config.file "$work/web.yml" \
    --listen 127.0.0.1:0
  local executed
  executed=$(cat "$work"/trace/* | { grep -o '^0x[0-9a-f]*' || true; } | sort -u | wc -l)
  [ "$executed" -gt 50000 ] || fail "only $executed instructions traced: is the log empty?"
  not_armv6 "$work"/trace/* >"$work/not-armv6" || true
  [ ! -s "$work/not-armv6" ] ||
    fail "the armhf binary ran instructions an ARMv6 core lacks: $(sort -u "$work/not-armv6" | head -20)"
  local thumb
  thumb=$(cat "$work"/trace/* | { grep -E '^0x[0-9a-f]+: +[0-9a-f]{4} ' || true; } | cut -d: -f1 | sort -u | wc -l)
  ok "the packaged binary ran $executed distinct instructions of its $((($(printf '%d' "$end") - $(printf '%d' "$start")) / 4)) ($thumb Thumb) on $cpu: none beyond ARMv6 with VFPv2"

  # The same code, static, on the arm1176 model.
  local twin=arm-unknown-linux-musleabihf
  toolchain_setup
  echo "   building the static twin ($twin)"
  # musl's own start files and libc from zig, not those of Rust's musl target.
  CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no" \
    cross_build "$twin" --quiet
  local static
  static=$(cross_target_dir "$twin")/$twin/release/power-monitord
  readelf -A "$static" | grep -Eq 'Tag_CPU_arch: v6(K|KZ)?$' || fail "the twin is not ARMv6"
  local a=(qemu-arm-static -cpu arm1176)
  "${a[@]}" "$static" --version >/dev/null || fail "the twin does not start on arm1176"
  "${a[@]}" "$static" check-config --config "$work/house.toml" >/dev/null || fail "twin check-config"
  "${a[@]}" "$static" read --config "$work/house.toml" --duration 2s >/dev/null || fail "twin read"
  rm -rf "$work/state" && mkdir -p "$work/state"
  STATE_DIRECTORY=$work/state serve_and_scrape "$work/twin.log" "${a[@]}" "$static" \
    --config "$work/house.toml" --web.config.file "$work/web.yml" --listen 127.0.0.1:0
  ok "the static twin runs on arm1176: check-config, read, the house over TLS with basic auth${mqtt_port:+ and MQTT}"
}

start_mosquitto
for part in "${parts[@]}"; do
  case $part in
    arm64) test_package arm64 bookworm ;;
    armhf) test_package armhf bullseye ;;
    arm64:* | armhf:*) test_package "${part%%:*}" "${part#*:}" ;;
    armv6) test_armv6 ;;
    *) fail "unknown part $part (arm64, armhf, armv6, or ARCH:SUITE)" ;;
  esac
done
echo "PASS: ${parts[*]}"
