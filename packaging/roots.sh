# shellcheck shell=bash
# Sourced by packaging/test-arm.sh and packaging/test-apt-repo.sh: minimal Debian root file
# systems of other architectures, run through qemu-user-static, as the packages' test beds.
# Sourcing it also gives the tests `fail`, `ok`, `free_port`, a scratch directory `$work` and
# `pids` to stop at exit; it needs root.
#
# - The kernel runs ARM binaries through qemu-user-static by binfmt_misc. An entry the system
#   has already (qemu-user-static's own, `qemu-arm`) is used as it is; otherwise one is
#   registered for the run and removed at exit, and binfmt_misc mounted and unmounted if needed.
# - A root is made once by debootstrap (minbase) from the Debian mirror and kept as a tarball
#   in $CACHE/roots; each test unpacks a fresh copy.
# - Commands run in a root by chroot in a mount namespace of their own, with their own /proc
#   and /dev/pts: when the command ends, the mounts are gone with it.

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
[ "$(id -u)" = 0 ] || fail "run as root: it makes root file systems and registers qemu"

# A scratch directory, and the processes started in `pids`: both gone at exit, with what
# binfmt_misc was given.
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cleanup_roots
  rm -rf "$work"
}
trap cleanup EXIT
binfmt_registered=()
binfmt_mounted=

# qemu's name for a Debian architecture.
qemu_arch() {
  case $1 in arm64) echo aarch64 ;; armhf) echo arm ;; *) return 1 ;; esac
}

binfmt_setup() {
  local q dir=/proc/sys/fs/binfmt_misc
  q=$(qemu_arch "$1")
  if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir"
    binfmt_mounted=1
  fi
  if [ -e "$dir/qemu-$q" ] && head -1 "$dir/qemu-$q" | grep -qx enabled; then return; fi
  [ -e "$dir/power-monitord-qemu-$q" ] && return
  # qemu-user-static's own entry under our name; F: the kernel opens qemu now, so it runs in
  # any root without a copy of it there.
  sed "s/^:qemu-$q:/:power-monitord-qemu-$q:/" "/usr/lib/binfmt.d/qemu-$q.conf" >"$dir/register"
  binfmt_registered+=("$dir/power-monitord-qemu-$q")
}

cleanup_roots() {
  local entry
  for entry in "${binfmt_registered[@]}"; do echo -1 >"$entry" 2>/dev/null || true; done
  binfmt_registered=()
  if [ -n "$binfmt_mounted" ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
  binfmt_mounted=
}

# root_make SUITE ARCH DIR: a fresh minimal SUITE root for ARCH in DIR.
root_make() {
  local suite=$1 arch=$2 dir=$3 tarball=$CACHE/roots/$1-$2-minbase-1.tar.gz
  binfmt_setup "$arch"
  if [ ! -f "$tarball" ]; then
    echo "debootstrap $suite $arch (once; kept in $tarball)"
    local tmp=$work/debootstrap-$suite-$arch
    rm -rf "$tmp"
    debootstrap --foreign --arch="$arch" --variant=minbase "$suite" "$tmp" "$DEBIAN_MIRROR" \
      >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log"; return 1; }
    chroot "$tmp" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log"; return 1; }
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    # What an installed system has and debootstrap leaves to the installer.
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
    echo "pi-$arch" >"$tmp/etc/hostname"
    mkdir -p "$CACHE/roots"
    tar -C "$tmp" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$tmp"
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  tar -C "$dir" -xzpf "$tarball"
}

# root_run DIR COMMAND...: COMMAND in the root, as root, with a clean environment.
root_run() {
  unshare --mount --propagation private -- /bin/sh -c "$ROOT_ENTER" sh "$@"
}

# root_start DIR COMMAND...: the same in the background; $! is COMMAND's own process.
root_start() {
  unshare --mount --propagation private -- /bin/sh -c "$ROOT_ENTER" sh "$@" &
}

# Mounts /proc and /dev/pts in the root $1, then runs the rest of the arguments there (every
# step an exec, so the process is the command's).
# shellcheck disable=SC2016 # expanded by that shell
ROOT_ENTER='dir=$1; shift
  mount -t proc proc "$dir/proc" &&
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$dir/dev/pts" &&
    exec chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"'

# root_snapshot DIR: one line per file (path, type, mode, owner, and the content's hash for
# regular files), for comparing a root before installing and after purging. Left out: what
# apt, dpkg and the logs keep for themselves, /etc's backup files (`passwd-`), and the line of
# the shared group i2c, which the package adds where the system lacks it and keeps.
root_snapshot() {
  (
    cd "$1" || exit
    local skip=(\( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./run -o -path ./var/log
      -o -path ./var/cache/apt -o -path ./var/lib/apt -o -path ./var/lib/dpkg
      -o -path ./var/cache/debconf -o -regex '\./etc/[^/]*-' \) -prune -o)
    find . -xdev "${skip[@]}" -printf '%p %y %m %U:%G %l\n'
    find . -xdev "${skip[@]}" -type f ! -path ./etc/group ! -path ./etc/gshadow -print0 |
      xargs -0 -r md5sum
    for f in etc/group etc/gshadow; do
      echo "$(grep -v '^i2c:' "$f" | md5sum | cut -d' ' -f1)  ./$f without i2c"
    done
  ) | sort
}
