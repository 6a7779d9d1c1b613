#!/usr/bin/env bash
# A private Docker engine for the integration tests: its own socket, data root and exec root
# under DIR, no bridge or iptables (containers use the host network), and a test image made
# from busybox-static without a registry.
#
# containerd runs on its own, not as dockerd's child: dockerd gives a containerd it starts
# 15 s to come up, a limit a loaded CI machine can miss on a restart; this script waits for
# containerd itself, and a dockerd restart then leaves it running, as a packaged install does.
#
#   tests/docker/engine.sh start DIR   prints nothing; DIR/docker.sock answers when it returns
#   tests/docker/engine.sh stop DIR    removes every container, then stops the engine by its PID
#   tests/docker/engine.sh restart DIR stops the engine only (it stops its containers, as a
#                                      dockerd upgrade would), then starts it again
#   tests/docker/engine.sh down DIR    the first half of restart: the engine is away until up
#   tests/docker/engine.sh up DIR      the second half: starts the engine again
#
# When no engine can start here (no dockerd, no overlay2, no privileges), start exits 0 and
# writes the reason to DIR/unavailable: the Docker tests then report skipped, naming it.
set -euo pipefail

cmd=${1:?start or stop}
dir=$(realpath -m "${2:?directory}")
sock=$dir/docker.sock
image=gpuvisor-test:1

api() { curl -sf --max-time 5 --unix-socket "$sock" "$@"; }

unavailable() {
  echo "$1" >"$dir/unavailable"
  echo "docker engine for tests: $1" >&2
  exit 0
}

# Waits for a process to exit, then kills it if it has not within 20 s; neither daemon hands a
# pidfd to a shell, and tail --pid waits on the process, not on a fixed time.
stop_pid() {
  kill "$1" 2>/dev/null || true
  timeout 20 tail --pid="$1" -f /dev/null || kill -9 "$1" 2>/dev/null || true
}

# Follows LOG until it shows PATTERN (inotify through tail -F), giving up if PID dies first.
wait_log() {
  timeout 60 grep -m1 -q "$3" < <(tail -F --pid="$1" "$2" 2>/dev/null)
}

stop_containerd() {
  [[ -f $dir/containerd.pid ]] || return 0
  stop_pid "$(cat "$dir/containerd.pid")"
  rm -f "$dir/containerd.pid"
}

stop_engine() {
  [[ -f $dir/docker.pid ]] || return 0
  local pid
  pid=$(cat "$dir/docker.pid")
  # Containers first, so the engine does not leave shims behind.
  if [[ ${1:-} != keep-containers ]]; then
    for id in $(api "http://localhost/containers/json?all=1" | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4); do
      api -X DELETE "http://localhost/containers/$id?force=1" >/dev/null || true
    done
  fi
  stop_pid "$pid"
  rm -f "$dir/docker.pid"
}

# dockerd leaves its network namespace mounted under the exec root; unmounted, so that the
# build tree can be deleted.
unmount_all() {
  { findmnt -rno TARGET | grep "^$dir/" || true; } | sort -r | while read -r m; do
    umount -l "$m" || true
  done
}

case $cmd in
  stop)
    stop_engine
    stop_containerd
    unmount_all
    exit 0
    ;;
  down)
    stop_engine keep-containers
    unmount_all
    exit 0
    ;;
  restart | up)
    if [[ $cmd == restart ]]; then
      stop_engine keep-containers
      unmount_all
    fi
    # The new engine's log replaces this one; kept, for a test that fails after a restart.
    mv -f "$dir/dockerd.log" "$dir/dockerd.log.1" 2>/dev/null || true
    cmd=restart
    ;;
  start) ;;
  *)
    echo "usage: $0 start|stop|restart|down|up DIR" >&2
    exit 2
    ;;
esac

mkdir -p "$dir"
rm -f "$dir/unavailable"
[[ $cmd == restart ]] || { stop_engine && stop_containerd && unmount_all; }
command -v dockerd >/dev/null || unavailable "dockerd is not installed (scripts/setup.sh installs docker.io)"
[[ $(id -u) == 0 ]] || unavailable "dockerd needs root"
[[ -x /bin/busybox ]] || unavailable "busybox-static is not installed (scripts/setup.sh installs it)"

mkdir -p "$dir/data" "$dir/exec" "$dir/containerd"
if [[ $cmd == start ]]; then
  command -v containerd >/dev/null || unavailable "containerd is not installed (docker.io brings it)"
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd/containerd.sock"
EOF
  containerd --config "$dir/containerd/config.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  wait_log "$(cat "$dir/containerd.pid")" "$dir/containerd.log" "containerd successfully booted" ||
    unavailable "containerd did not start: $(tail -n 3 "$dir/containerd.log" | tr '\n' ' ')"
fi

dockerd --host "unix://$sock" --data-root "$dir/data" --exec-root "$dir/exec" \
  --containerd "$dir/containerd/containerd.sock" \
  --pidfile "$dir/docker.pid" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
  >"$dir/dockerd.log" 2>&1 &

# The engine logs "API listen on" once its socket serves.
wait_log $! "$dir/dockerd.log" "API listen on" ||
  unavailable "dockerd did not start: $(tail -n 3 "$dir/dockerd.log" | tr '\n' ' ')"
api http://localhost/_ping >/dev/null || unavailable "dockerd does not answer /_ping"

[[ $cmd == restart ]] && exit 0

# The image: busybox alone, imported from a tarball, so no registry is needed.
rootfs=$dir/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh sleep httpd cat echo trap kill; do ln -sf busybox "$rootfs/bin/$applet"; done
echo ok >"$rootfs/www/health"
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
tar -C "$rootfs" -cf "$dir/rootfs.tar" .
api -X POST -H 'Content-Type: application/x-tar' --data-binary "@$dir/rootfs.tar" \
  "http://localhost/images/create?fromSrc=-&repo=gpuvisor-test&tag=1" >/dev/null ||
  unavailable "cannot import the test image"
api "http://localhost/images/$image/json" >/dev/null || unavailable "test image missing after import"
