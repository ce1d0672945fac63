#!/usr/bin/env bash
# Make a Docker engine answer on this machine: does nothing when one already answers; otherwise
# installs Debian's docker.io (and its storage helpers), mounts the cgroup controllers when
# /sys/fs/cgroup lacks them, starts dockerd in the background with its log in a file, and
# waits until `docker info` answers. Needs root (apt-get, dockerd). Idempotent.
#   bash testbed/provider/engine.sh            # start (or confirm) the engine
# Environment: TESTBED_DOCKERD_LOG (default /var/log/testbed-dockerd.log),
#              TESTBED_STORAGE_DRIVER (default: overlay2, else fuse-overlayfs, else vfs).
set -euo pipefail

log=${TESTBED_DOCKERD_LOG:-/var/log/testbed-dockerd.log}
say() { printf 'engine: %s\n' "$*" >&2; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

if answers; then
  say "a Docker engine already answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "no Docker engine answers and this is not root: start dockerd yourself, or run me as root"
  exit 2
fi

if ! command -v dockerd >/dev/null 2>&1; then
  say "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # iptables for Docker's own NAT; fuse-overlayfs where overlay2 cannot mount; cgroupfs-mount
  # for machines that boot without the cgroup controllers mounted.
  apt-get install -y -qq --no-install-recommends docker.io fuse-overlayfs cgroupfs-mount \
    iptables >/dev/null
fi

# cgroup controllers: dockerd (cgroupfs driver) needs them; some machines boot without them.
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -d /sys/fs/cgroup/memory ]; then
  say "mounting cgroup controllers"
  if command -v cgroupfs-mount >/dev/null 2>&1; then cgroupfs-mount; fi
fi

# The storage driver: overlay2 on a filesystem that supports it (ext4/xfs here), else
# fuse-overlayfs, else vfs (slow, always works). A failed driver makes dockerd exit at once.
start() {
  say "starting dockerd --storage-driver=$1 (log: $log)"
  mkdir -p "$(dirname "$log")"
  nohup dockerd --storage-driver="$1" >>"$log" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 60); do
    if answers; then
      say "engine up: dockerd pid $pid, storage driver $1"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "dockerd --storage-driver=$1 exited: $(tail -n 3 "$log" | tr '\n' ' ')"
      return 1
    fi
    sleep 1
  done
  say "dockerd --storage-driver=$1 did not answer within 60 s; stopping it"
  kill "$pid" 2>/dev/null || true
  return 1
}

drivers=${TESTBED_STORAGE_DRIVER:-overlay2 fuse-overlayfs vfs}
for driver in $drivers; do
  if start "$driver"; then exit 0; fi
done
say "no storage driver worked ($drivers); see $log"
exit 1
