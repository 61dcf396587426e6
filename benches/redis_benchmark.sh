#!/usr/bin/env bash
# redis-benchmark against `orcastra serve` and `redis-server`, in the same
# run, with matching durability on each side:
#
#   orcastra --fsync interval (1 s)   vs  redis appendfsync everysec
#   orcastra --fsync batch (group     vs  redis appendfsync always
#            commit: acknowledged = durable)
#
# XADD at 50 clients with pipelines of 1 and 16, and XREADGROUP of one new
# entry at a time (the XACK that should follow needs the id read, which
# redis-benchmark cannot pass on; `orcastra bench` measures the pair).
# Each case runs RUNS times, the servers taking turns; the table shows the
# median requests/s of each side and their ratio.
#
# Usage: benches/redis_benchmark.sh [RUNS] [REQUESTS]   (defaults 5, 200000)
# ORCASTRA_THREADS=n runs `orcastra serve --threads n` (default 1).
# PIN=1 runs each server on CPU 1 and redis-benchmark on CPU 0 (taskset),
# so neither side competes with the load generator for a core; by default
# the scheduler places all three.
# Needs redis-server and redis-benchmark on PATH (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
requests=${2:-200000}
clients=50
server_cpu=() client_cpu=()
if [[ ${PIN:-0} == 1 ]]; then
  server_cpu=(taskset -c 1) client_cpu=(taskset -c 0)
fi

cargo build --release --quiet --bin orcastra
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # port
  for _ in $(seq 200); do
    redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "no server on port $1" >&2
  exit 1
}

start_orcastra() { # fsync; sets $ours
  ours=$(free_port)
  "${server_cpu[@]}" ./target/release/orcastra serve --listen "127.0.0.1:$ours" --http off --fsync "$1" \
    ${ORCASTRA_THREADS:+--threads "$ORCASTRA_THREADS"} \
    --data "$work/orcastra-$1" >"$work/orcastra-$1.log" 2>&1 &
  pids+=($!)
  wait_for "$ours"
}

start_redis() { # appendfsync; sets $theirs
  theirs=$(free_port)
  mkdir -p "$work/redis-$1"
  "${server_cpu[@]}" redis-server --port "$theirs" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync "$1" --dir "$work/redis-$1" --logfile "$work/redis-$1.log" >/dev/null 2>&1 &
  pids+=($!)
  wait_for "$theirs"
}

# Requests per second of one redis-benchmark run.
rps() { # port pipeline command...
  local port=$1 pipeline=$2; shift 2
  "${client_cpu[@]}" redis-benchmark -p "$port" -c "$clients" -n "$requests" -P "$pipeline" -q "$@" 2>/dev/null |
    tr '\r' '\n' | grep 'requests per second' | tail -1 |
    sed -E 's/.*: ([0-9.]+) requests per second.*/\1/'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# A stream and group for XREADGROUP with enough entries for every read.
prepare_group() { # port
  redis-cli -p "$1" DEL rg >/dev/null
  redis-cli -p "$1" XGROUP CREATE rg g '$' MKSTREAM >/dev/null
  redis-benchmark -p "$1" -c "$clients" -n "$((requests * (runs * 2 + 1)))" -P 64 -q \
    XADD rg '*' f v >/dev/null 2>&1
}

row() { # label orcastra-port redis-port pipeline command...
  local label=$1 ours=$2 theirs=$3 pipeline=$4; shift 4
  local a=() b=()
  for _ in $(seq "$runs"); do
    a+=("$(rps "$ours" "$pipeline" "$@")")
    b+=("$(rps "$theirs" "$pipeline" "$@")")
  done
  local ma mb
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  awk -v l="$label" -v p="$pipeline" -v a="$ma" -v b="$mb" \
    'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2fx |\n", l, p, a, b, a / b }'
}

echo "redis-benchmark, $clients clients, $requests requests per run, median of $runs runs${server_cpu:+, servers on CPU 1 and redis-benchmark on CPU 0}"
echo "(orcastra $(./target/release/orcastra --version | cut -d' ' -f2), $(redis-server --version | cut -d' ' -f3))"
echo
echo "| workload (orcastra fsync vs redis appendfsync) | pipeline | orcastra req/s | redis req/s | orcastra/redis |"
echo "|---|---:|---:|---:|---:|"
for pair in "interval everysec" "batch always"; do
  set -- $pair
  start_orcastra "$1"
  start_redis "$2"
  for pipeline in 1 16; do
    row "XADD ($1 vs $2)" "$ours" "$theirs" "$pipeline" XADD bench '*' field __rand_int__
  done
  prepare_group "$ours"
  prepare_group "$theirs"
  for pipeline in 1 16; do
    row "XREADGROUP COUNT 1 ($1 vs $2)" "$ours" "$theirs" "$pipeline" \
      XREADGROUP GROUP g c COUNT 1 STREAMS rg '>'
  done
done
