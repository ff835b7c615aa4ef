#!/bin/sh
# bench/server.sh BUILD: keystonelight-server beside redis-server, in one run on this
# machine, with the same client (redis-benchmark) and the same settings: throughput with
# 50 clients, plain and pipelined (-P 16), durable SETs (fsync always / appendfsync
# always), the time to load a log of N keys at start, and memory per key. It prints each
# figure for both and their ratio (keystonelight / redis: above 1 means keystonelight
# does more per second, or, for time and memory, costs more).
#
# Figures from a shared machine are noisy: compare the ratios of one run, not the
# absolute numbers of two. BENCH_REQUESTS (default 200000) and BENCH_KEYS (default
# 500000) size the runs. Nothing here is a pass/fail test.
build=${1:-build/bench}
server=$build/bin/keystonelight-server
requests=${BENCH_REQUESTS:-200000}
keys=${BENCH_KEYS:-500000}
pids=

for program in redis-server redis-benchmark redis-cli; do
  if ! command -v "$program" >/dev/null 2>&1; then
    echo "bench: $program is missing; install redis-server and redis-tools"
    echo "(apt-get install -y redis-server redis-tools) to compare against Redis"
    exit 1
  fi
done
[ -x "$server" ] || { echo "bench: $server is missing; run make bench"; exit 1; }

work=$(mktemp -d) || exit 1
cleanup() {
  for pid in $pids; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nap() { sleep 0.05 2>/dev/null || sleep 1; }
now_ms() { date +%s%3N; }

# ks NAME FSYNC: starts keystonelight-server on a free port; sets $pid and $port.
ks() {
  "$server" --port 0 --dir "$work/$1" --fsync "$2" > "$work/$1.log" 2>&1 &
  pid=$! port=
  pids="$pids $pid"
  for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$1.log")
    [ -n "$port" ] && return 0
    nap
  done
  echo "bench: keystonelight-server did not start:"; cat "$work/$1.log"; exit 1
}

# redis NAME FSYNC: starts redis-server with an append-only file on a free port (tried
# from a random base, since Redis cannot pick one itself); sets $pid and $port.
redis() {
  mkdir -p "$work/$1"
  base=$(( $(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000 ))
  for try in 0 1 2 3 4 5 6 7 8 9; do
    port=$((base + try))
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/$1" --save '' \
        --appendonly yes --appendfsync "$2" --daemonize no --logfile "$work/$1.log" &
    pid=$!
    for _ in $(seq 600); do
      [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && { pids="$pids $pid"; return 0; }
      kill -0 "$pid" 2>/dev/null || break
      nap
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  echo "bench: redis-server did not start:"; cat "$work/$1.log"; exit 1
}

stop() { redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1; wait "$pid" 2>/dev/null; }

# throughput ARGS...: requests per second of each test, as "TEST rps" lines.
throughput() {
  redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$requests" --csv "$@" 2>/dev/null |
    sed -n 's/^"\([A-Z_]*\)","\([0-9.]*\)".*/\1 \2/p'
}

# row LABEL A B UNIT: one line of the table, with B/A... the ratio A / B.
row() {
  awk -v label="$1" -v a="$2" -v b="$3" -v unit="$4" 'BEGIN {
    ratio = (b > 0) ? sprintf("%.2f", a / b) : "-"
    printf "%-34s %14s %14s %8s\n", label, a " " unit, b " " unit, ratio }'
}

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null || echo 0; }

# The same N keys for both servers, as RESP, for redis-cli --pipe.
awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) {
  k = "key:" i; v = sprintf("value-%010d-abcdefghijklmnopqrstuvwxyz", i)
  printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' \
  > "$work/keys.resp"

echo "keystonelight-server against redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $(nproc) cores, $requests requests per test"
printf "%-34s %14s %14s %8s\n" "" "keystonelight" "redis" "ratio"

for mode in "" "-P 16"; do
  ks plain everysec; k=$(throughput -t ping,set,get,incr $mode); stop
  redis plain-redis everysec; r=$(throughput -t ping,set,get,incr $mode); stop
  rm -rf "$work/plain" "$work/plain-redis"
  for test in PING_MBULK SET GET INCR; do
    row "$test, 50 clients ${mode:-unpipelined}" \
        "$(echo "$k" | awk -v t="$test" '$1 == t { print int($2) }')" \
        "$(echo "$r" | awk -v t="$test" '$1 == t { print int($2) }')" "/s"
  done
done

ks durable always; k=$(throughput -t set); stop
redis durable-redis always; r=$(throughput -t set); stop
row "SET, fsync always, 50 clients" "$(echo "$k" | awk '{ print int($2) }')" \
    "$(echo "$r" | awk '{ print int($2) }')" "/s"

# Memory per key and load time: the same keys into each, then a restart.
ks load everysec; before=$(rss_kb "$pid")
redis-cli -p "$port" --pipe < "$work/keys.resp" > /dev/null
k_mem=$(( ($(rss_kb "$pid") - before) * 1024 / keys )); stop
redis load-redis everysec; before=$(rss_kb "$pid")
redis-cli -p "$port" --pipe < "$work/keys.resp" > /dev/null
r_mem=$(( ($(rss_kb "$pid") - before) * 1024 / keys )); stop
row "memory per key ($keys keys)" "$k_mem" "$r_mem" "B"

t0=$(now_ms); ks load everysec; k_load=$(( $(now_ms) - t0 )); stop
t0=$(now_ms); redis load-redis everysec; r_load=$(( $(now_ms) - t0 )); stop
row "start with $keys keys in the log" "$k_load" "$r_load" "ms"
