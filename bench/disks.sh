# shellcheck shell=bash
# Sourced by the SD-card benches (sd-writes.sh, remote-write-sd.sh): a scratch directory
# `$work`; `disk N`, a fresh ext4 file system of its own on a loop device, mounted at
# $work/mntN as Raspberry Pi OS mounts its root (noatime; ext4 commits its journal every 5 s),
# its device left in `$loop`; `writes LOOP`, the write I/Os completed and the sectors written as
# the device counted them (/sys/block/loopN/stat, fields 5 and 7: what the kernel really wrote,
# where /proc/PID/io would count every page dirtied). On exit the PIDs in `pids` are stopped
# and every mount, device and file removed.
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices and mounts)" >&2; exit 1; }
work=$(mktemp -d /tmp/pm-bench.XXXXXX)
loops=() mounts=() pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work" /dev/shm/pm-bench.*
}
trap cleanup EXIT

disk() {
  truncate -s 256M "$work/disk$1.img"
  # No lazy initialisation: ext4 would zero its tables in the background, during the run.
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/disk$1.img"
  loop=$(losetup -f --show "$work/disk$1.img")
  loops+=("$loop")
  mkdir -p "$work/mnt$1"
  mount -o noatime "$loop" "$work/mnt$1"
  mounts+=("$work/mnt$1")
}

writes() { awk '{print $5, $7}' "/sys/block/$(basename "$1")/stat"; }

# A runtime directory on a tmpfs, as /run is on a Pi.
tmpfs_dir() { mktemp -d /dev/shm/pm-bench.XXXXXX; }
