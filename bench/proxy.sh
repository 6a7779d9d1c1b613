#!/usr/bin/env bash
# The proxy benchmark: wrk on loopback against the test service straight, through gpuvisor's
# /upstream/ proxy, through nginx configured as a plain reverse proxy (keep-alive upstream) and
# through Go's net/http/httputil.ReverseProxy (bench/goproxy: the core of llama-swap), in the
# same run; then the time an SSE event takes to reach a client, straight and through gpuvisor.
# Prints requests/s and p99 per target, the ratios the issue sets floors for (gpuvisor/nginx)
# and gpuvisor's ratios to Go's proxy.
#
#   bench/proxy.sh [BUILD_DIR]     (needs wrk, nginx and go: scripts/setup.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
# The load generator on one CPU, the proxies and the service on the other, so that wrk's own
# CPU time does not decide who wins; PIN=0 shares every CPU instead.
if [[ ${PIN:-1} == 1 && $(nproc) -ge 2 ]]; then
  LOAD="taskset -c 0"; SUT="taskset -c 1-$(($(nproc) - 1))"; THREADS=${THREADS:-1}
else
  LOAD=""; SUT=""; THREADS=${THREADS:-2}
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A port nothing listens on now (a connect to it is refused).
free_port() {
  local p
  while :; do
    p=$(shuf -i 20000-32000 -n 1)  # below the ephemeral range: no TIME_WAIT socket holds it
    (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# Go's reverse proxy, built here with the standard library alone (no network needed), before
# anything starts. The build cache is Go's usual one, so that a Go that does not ship the
# standard library compiled builds it once; GOTOOLCHAIN=local keeps a newer go from looking
# for another toolchain.
(cd bench/goproxy && GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-$work}/.cache}/go-build} \
  GOPATH=$work/gopath GOTOOLCHAIN=local GOFLAGS='' go build -o "$work/goproxy" .)

# Four distinct ports: none of them listens yet, so free_port alone could pick one twice.
svc=$(free_port); gv=$svc; ngx=$svc; gop=$svc
while [[ $gv == "$svc" ]]; do gv=$(free_port); done
while [[ $ngx == "$svc" || $ngx == "$gv" ]]; do ngx=$(free_port); done
while [[ $gop == "$svc" || $gop == "$gv" || $gop == "$ngx" ]]; do gop=$(free_port); done
# IO_THREADS: daemon.io_threads (0, the default: two per core the daemon may run on).
cat > "$work/gpuvisor.yaml" <<YAML
daemon: {io_threads: ${IO_THREADS:-0}}
services:
  svc:
    command: [$PWD/$BUILD_DIR/gpuvisor-testsvc, --port, "$svc"]
    health: {tcp: "127.0.0.1:$svc"}
    proxy: {url: "http://127.0.0.1:$svc"}
YAML
$SUT "$BUILD_DIR"/gpuvisor serve --config "$work/gpuvisor.yaml" --listen "127.0.0.1:$gv" \
  --state-dir "$work/state" --log-level warn > "$work/gv.out" 2> "$work/gv.err" &
pids+=($!)
wait_port "$gv"
"$BUILD_DIR"/gpuvisor ensure svc --url "http://127.0.0.1:$gv" > /dev/null

cat > "$work/nginx.conf" <<NGINX
worker_processes ${NGINX_WORKERS:-auto};
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream svc { server 127.0.0.1:$svc; keepalive 128; }
  server {
    listen 127.0.0.1:$ngx;
    location / {
      proxy_pass http://svc;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
$SUT nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx.err"
wait_port "$ngx"

# Go's httputil.ReverseProxy (bench/goproxy/main.go), keep-alive upstream like nginx.
$SUT "$work/goproxy" -listen "127.0.0.1:$gop" -upstream "http://127.0.0.1:$svc" \
  > "$work/goproxy.out" 2> "$work/goproxy.err" &
pids+=($!)
wait_port "$gop"

echo "== machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION${LOAD:+ ($LOAD; servers $SUT)}, GET / of gpuvisor-testsvc"
run() {  # name url -> "name rps p99_ms"
  local out rps p99
  out=$($LOAD wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<< "$out")
  printf '%-9s %10.0f req/s   p99 %7.2f ms\n' "$1" "$rps" "$p99" >&2
  echo "$rps $p99"
}
read -r d_rps d_p99 < <(run direct "http://127.0.0.1:$svc/")
# Rounds of gpuvisor, nginx and Go's proxy back to back, the order rotated each round (each goes
# first in one round of three), so that a noisy moment on a shared machine lands on one round of
# one of them and not on the verdict: the ratios reported are the medians of the rounds'.
measure() {  # target -> sets its rps and p99
  case $1 in
    gpuvisor) read -r g_rps g_p99 < <(run gpuvisor "http://127.0.0.1:$gv/upstream/svc/") ;;
    nginx) read -r n_rps n_p99 < <(run nginx "http://127.0.0.1:$ngx/") ;;
    goproxy) read -r o_rps o_p99 < <(run goproxy "http://127.0.0.1:$gop/") ;;
  esac
}
targets=(gpuvisor nginx goproxy)
ratios=()  # per round: gpuvisor/nginx throughput, p99; gpuvisor/go throughput, p99
for ((round = 1; round <= ${ROUNDS:-3}; ++round)); do
  for ((i = 0; i < ${#targets[@]}; ++i)); do
    measure "${targets[(round - 1 + i) % ${#targets[@]}]}"
  done
  ratios+=("$(awk -v g="$g_rps" -v n="$n_rps" -v o="$o_rps" -v gp="$g_p99" -v np="$n_p99" -v op="$o_p99" \
    'BEGIN { printf "%.3f %.3f %.3f %.3f", g / n, gp / np, g / o, gp / op }')")
  read -r r_n _ r_o _ <<< "${ratios[-1]}"
  printf 'round %d: gpuvisor/nginx throughput %s, gpuvisor/go-reverseproxy throughput %s\n' \
    "$round" "${r_n}x" "${r_o}x" >&2
done
median() { printf '%s\n' "${ratios[@]}" | cut -d' ' -f"$1" | sort -n | sed -n "$(((${#ratios[@]} + 1) / 2))p"; }
printf 'gpuvisor/nginx (median of %d rounds): throughput %.2fx (floor 1.0x), p99 %.2fx (ceiling 1.5x)\n' \
  "${#ratios[@]}" "$(median 1)" "$(median 2)"
printf 'gpuvisor/go-reverseproxy (median of %d rounds): throughput %.2fx, p99 %.2fx\n' \
  "${#ratios[@]}" "$(median 3)" "$(median 4)"

"$BUILD_DIR"/bench/bench_stream_latency --url "http://127.0.0.1:$svc/stream"
"$BUILD_DIR"/bench/bench_stream_latency --url "http://127.0.0.1:$gv/upstream/svc/stream"
