#!/bin/sh
# bench/server.sh BUILD [MARKDOWN SVG]: keystonelight-server beside redis-server and a null
# server (bench/null-server.cpp: epoll answering +OK to everything, the ceiling of this
# client and machine), in one run, with the same client (redis-benchmark, or
# bench/connections.cpp) and the same settings. Rows:
#
#   SET, GET, INCR with 50 clients, unpipelined and -P 16 (fsync everysec), and SET under
#   fsync always (Redis: appendfsync always): requests per second, p50 and p99 latency
#   (redis-benchmark's), and the server's CPU time per request (user + system ticks from
#   /proc/PID/stat, before and after, over the requests: what the client cannot hide);
#   1 000 and 10 000 connections: the time to open them all and have a PING answered on
#   each, and the server's RSS per idle connection (VmRSS before and after);
#   memory per key, and the time to start on a log of BENCH_KEYS keys (key:N, 37-byte
#   values, as redis-benchmark's keys), and the same for BENCH_BIG_KEYS keys of 16 bytes
#   with 100-byte values.
#
# Each figure is the median of BENCH_RUNS (3) runs that alternate the servers (keystonelight,
# redis, null, keystonelight, ...). When keystonelight-server accepts `--io threads` and
# `--io events` (tried by starting it), both I/O models get a column; otherwise one.
# Ratios are keystonelight / redis and keystonelight / null, for every figure: above 1
# means more requests per second, or more time, CPU or memory.
#
# With MARKDOWN and SVG it also writes them: the machine, compiler, date, the table exactly
# as printed, and a chart drawn here (awk, no dependency). Figures from a shared machine are
# noisy: compare the ratios of one run, not the absolute numbers of two. Sizes:
# BENCH_REQUESTS (200000, unpipelined), BENCH_PIPELINED_REQUESTS (5 x that: at -P 16 a run
# must last long enough for /proc's 10 ms ticks), BENCH_FSYNC_REQUESTS (20000),
# BENCH_KEYS (500000), BENCH_BIG_KEYS (1000000), BENCH_CONNECTIONS ("1000 10000"),
# BENCH_CONNECT_WINDOW (500 connections at most waiting for their answer at once; 0: all
# at once), BENCH_EMBEDDED_KEYS (1000000).
#
# When BUILD/bin/embedded exists (bench/embedded.cpp, built when LevelDB's headers are
# there), a second table sets the embedded Store beside LevelDB: random 16-byte keys,
# 100-byte values; fill and read from 1 and 2 threads without fsync, and durable sets
# (fsync before each returns) from 1, 2 and 4 threads. Nothing here is a pass/fail test.
build=${1:-build/bench}
markdown=${2:-}
svg=${3:-}
server=$build/bin/keystonelight-server
null_server=$build/bin/null-server
connections=$build/bin/connections
embedded=$build/bin/embedded
requests=${BENCH_REQUESTS:-200000}
pipelined=${BENCH_PIPELINED_REQUESTS:-$((requests * 5))}
durable=${BENCH_FSYNC_REQUESTS:-20000}
keys=${BENCH_KEYS:-500000}
big_keys=${BENCH_BIG_KEYS:-1000000}
runs=${BENCH_RUNS:-3}
connection_counts=${BENCH_CONNECTIONS:-1000 10000}
embedded_keys=${BENCH_EMBEDDED_KEYS:-1000000}
window=${BENCH_CONNECT_WINDOW:-500}
clients=50
max_clients=$(( $(echo "$connection_counts" | tr ' ' '\n' | sort -n | tail -n 1) + 100 ))
pid='' port='' system=''

for program in redis-server redis-benchmark redis-cli; do
  if ! command -v "$program" >/dev/null 2>&1; then
    echo "bench: $program is missing; install redis-server and redis-tools"
    echo "(apt-get install -y redis-server redis-tools) to compare against Redis"
    exit 1
  fi
done
for program in "$server" "$null_server" "$connections"; do
  [ -x "$program" ] || { echo "bench: $program is missing; run make bench"; exit 1; }
done

work=$(mktemp -d) || exit 1
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nap() { sleep 0.01 2>/dev/null || sleep 1; }
now_ms() { date +%s%3N; }
ticks_per_second=$(getconf CLK_TCK)

# As many descriptors as allowed: 10 000 connections need 10 000 on each side.
# shellcheck disable=SC3045  # ulimit -n and -H: dash, bash and busybox sh have them
hard=$(ulimit -H -n)
[ "$hard" = unlimited ] && hard=$(cat /proc/sys/fs/nr_open)
# shellcheck disable=SC3045
ulimit -n "$hard" 2>/dev/null
# shellcheck disable=SC3045
fd_limit=$(ulimit -n)

# ---------------------------------------------------------------------------------------
# Starting and stopping the servers. Each start sets $pid and $port; only one server runs
# at a time. A server's output goes to a log file that is emptied *before* the server is
# started: the shell opens a background command's redirection in the child, after `&`
# has returned, so a reader of the log may come first. That was the `sed: can't read
# .../durable.log` of earlier versions, and worse, a second start under the same name could
# read the port of the first, stopped server from the stale log.
# ---------------------------------------------------------------------------------------

# port_from_log LOG: the port a "listening on 127.0.0.1:PORT" line names, once it is there.
port_from_log() { sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" 2>/dev/null | head -n 1; }

# alive: true while the server $pid runs (a zombie the shell has not reaped yet is dead).
alive() {
  case $(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null) in
    ''|Z) return 1 ;;
  esac
}

# answers: true once the server on $port answers PING (PONG from Redis and keystonelight,
# OK from the null server; Redis says LOADING while it replays its file).
answers() {
  case $(redis-cli -p "$port" PING 2>/dev/null) in PONG|OK) return 0 ;; esac
  return 1
}

# start SYSTEM NAME FSYNC: SYSTEM is ks (keystonelight-server on its defaults), ks-threads
# or ks-events (with --io threads or --io events), redis or null; NAME names its data
# folder and log in $work.
start() {
  system=$1 log=$work/$2.log port=
  : > "$log"
  case $1 in
    ks*)
      flags=''
      [ "$1" = ks ] || flags="--io ${1#ks-}"
      # shellcheck disable=SC2086  # $flags is empty or "--io MODE"
      "$server" $flags --port 0 --dir "$work/$2" --fsync "$3" --max-clients "$max_clients" \
          >> "$log" 2>&1 &
      pid=$! ;;
    null)
      "$null_server" 0 >> "$log" 2>&1 &
      pid=$! ;;
    redis)
      mkdir -p "$work/$2"
      # Redis cannot pick a free port itself: try from a random base.
      base=$(( $(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000 ))
      for try in 0 1 2 3 4 5 6 7 8 9; do
        port=$((base + try))
        redis-server --port "$port" --bind 127.0.0.1 --dir "$work/$2" --save '' \
            --appendonly yes --appendfsync "$3" --maxclients "$max_clients" \
            --daemonize no --logfile "$log" &
        pid=$!
        for _ in $(seq 1000); do
          answers && return 0
          alive || break
          nap
        done
        kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
      done
      echo "bench: redis-server did not start:"; cat "$log"; exit 1 ;;
  esac
  for _ in $(seq 6000); do
    [ -z "$port" ] && port=$(port_from_log "$log")
    [ -n "$port" ] && answers && return 0
    alive || break
    nap
  done
  echo "bench: $1 did not start:"; cat "$log"; exit 1
}

# stop: SHUTDOWN (a signal for the null server), and kill -9 after 20 s.
stop() {
  if [ "$system" = null ]; then kill "$pid" 2>/dev/null
  else redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1; fi
  for _ in $(seq 2000); do
    alive || break
    nap
  done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  pid=
}

# Which I/O models does keystonelight-server have? A trial start of each: a server
# without --io refuses the flag (exit status 2) at once.
io_accepted() {
  (
    start "ks-$1" "probe-$1" everysec >/dev/null 2>&1
    stop
  )
}
keystonelight=ks
if io_accepted threads && io_accepted events; then keystonelight="ks-threads ks-events"; fi
rm -rf "$work"/probe-*

# ---------------------------------------------------------------------------------------
# Measurements. Each appends "ROW METRIC SYSTEM RUN VALUE" lines to $results; a note for
# the table (a row that could not be measured) goes to $notes.
# ---------------------------------------------------------------------------------------

results=$work/results notes=$work/notes
: > "$results"; : > "$notes"
record() { echo "$1 $2 $system $run $3" >> "$results"; }

# cpu_ticks: user + system time of the server so far, in clock ticks (fields 14 and 15
# of /proc/PID/stat, counted after the command name, which is in parentheses).
cpu_ticks() { sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'; }
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null || echo 0; }

# measure ROW TEST REQUESTS PIPELINE: one redis-benchmark run of TEST (set, get, incr):
# requests per second, p50 and p99 latency, and the server's CPU per request.
measure() {
  before=$(cpu_ticks)
  csv=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -n "$3" -P "$4" --csv -t "$2" 2>/dev/null)
  after=$(cpu_ticks)
  line=$(echo "$csv" | grep -i "^\"$2\"")
  if [ -z "$line" ]; then
    echo "$1: no figures from redis-benchmark against $system in run $run" >> "$notes"
    return
  fi
  # "SET","rps","avg","min","p50","p95","p99","max": split on the quotes.
  record "$1" rps "$(echo "$line" | awk -F'"' '{ print $4 }')"
  record "$1" p50 "$(echo "$line" | awk -F'"' '{ print $10 }')"
  record "$1" p99 "$(echo "$line" | awk -F'"' '{ print $14 }')"
  record "$1" cpu "$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$3" \
      'BEGIN { printf "%.4f", t * 1e6 / hz / n }')"
}

# The same N keys for every server, as RESP, for redis-cli --pipe.
awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) {
  k = "key:" i; v = sprintf("value-%010d-abcdefghijklmnopqrstuvwxyz", i)
  printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' \
  > "$work/keys.resp"
# And BENCH_BIG_KEYS keys of 16 bytes (key:000000000042) with 100-byte values.
awk -v n="$big_keys" 'BEGIN { for (i = 0; i < n; i++) {
  k = sprintf("key:%012d", i); v = sprintf("value-%010d-%083d", i, 0)
  printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$100\r\n%s\r\n", k, v } }' \
  > "$work/big.resp"

redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
echo "bench: keystonelight-server ($keystonelight) against redis-server $redis_version and the null server," \
     "$runs alternating runs; ulimit -n $fd_limit" >&2

# Throughput, latency and CPU, fsync everysec: every server once per run, in turn.
for run in $(seq "$runs"); do
  for s in $keystonelight redis null; do
    echo "bench: run $run, $s: SET, GET, INCR, unpipelined and -P 16" >&2
    start "$s" plain-"$s" everysec
    for test in set get incr; do measure "$test-1" "$test" "$requests" 1; done
    for test in set get incr; do measure "$test-16" "$test" "$pipelined" 16; done
    stop; rm -rf "$work/plain-$s"
  done
done

# Durable SETs: every write fsynced before its reply.
for run in $(seq "$runs"); do
  for s in $keystonelight redis; do
    echo "bench: run $run, $s: SET under fsync always" >&2
    start "$s" durable-"$s" always
    measure set-always set "$durable" 1
    stop; rm -rf "$work/durable-$s"
  done
done

# Many connections: a fresh server for each count, so that memory freed by the last
# count cannot hide what the next one costs. Twice: at most $window waiting for their
# answer at once (the server's own speed, and its RSS per idle connection), and all at
# once ("burst": a crowd arriving together, where a full listen backlog costs the
# kernel's one-second SYN retry).
for n in $connection_counts; do
  if [ $((n + 64)) -gt "$fd_limit" ]; then
    echo "conn-$n: not measured: $n connections need more descriptors than ulimit -n allows ($fd_limit)" >> "$notes"
    continue
  fi
  for run in $(seq "$runs"); do
    for s in $keystonelight redis null; do
      for kind in conn burst; do
        echo "bench: run $run, $s: $n connections ($kind)" >&2
        start "$s" conn-"$s" everysec
        at_once=$window; [ "$kind" = burst ] && at_once=0
        if out=$("$connections" "$port" "$n" "$pid" "$at_once" 2>&1); then
          record "$kind-$n" connect "${out% *}"
          [ "$kind" = conn ] && record "$kind-$n" rss "${out#* }"
        else
          echo "$kind-$n: $s, run $run: $out" >> "$notes"
        fi
        stop; rm -rf "$work/conn-$s"
      done
    done
  done
done

# Memory per key (RSS growth while the keys are written), then the time from starting
# the program until it answers PING with those keys in its log. load ROW FILE COUNT.
load() {
  for run in $(seq "$runs"); do
    for s in $keystonelight redis; do
      echo "bench: run $run, $s: $3 keys ($2), memory and start" >&2
      start "$s" load-"$s" everysec
      before=$(rss_kb)
      redis-cli -p "$port" --pipe < "$work/$2" > /dev/null
      record "$1" mem $(( ($(rss_kb) - before) * 1024 / $3 ))
      stop
      t0=$(now_ms); start "$s" load-"$s" everysec; record "$1" start $(( $(now_ms) - t0 ))
      stop; rm -rf "$work/load-$s"
    done
  done
}
load keys keys.resp "$keys"
load big-keys big.resp "$big_keys"

# The embedded engines, one process per run, the order alternating.
if [ -x "$embedded" ]; then
  for run in $(seq "$runs"); do
    order=ks,leveldb; [ $((run % 2)) = 0 ] && order=leveldb,ks
    echo "bench: run $run, embedded Store and LevelDB, $embedded_keys keys" >&2
    mkdir "$work/embedded"
    if out=$("$embedded" "$work/embedded" "$embedded_keys" "$order" 2>&1); then
      echo "$out" | while read -r row system value; do
        echo "emb-$row ops $system $run $value" >> "$results"
      done
    else
      echo "embedded, run $run: $out" >> "$notes"
    fi
    rm -rf "$work/embedded"
  done
fi

# ---------------------------------------------------------------------------------------
# The table: the median of each figure over the runs, then the ratios.
# ---------------------------------------------------------------------------------------

medians=$work/medians
sort -k1,1 -k2,2 -k3,3 -k5,5g "$results" | awk '
  function flush() { if (n) print key, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
  { k = $1 " " $2 " " $3
    if (k != key) { flush(); key = k; n = 0 }
    v[++n] = $5 }
  END { flush() }' > "$medians"

# The rows, in order: ROW|LABEL|METRICS (METRIC:UNIT:FORMAT;...).
served="rps:req/s:%.0f;p50:p50 ms:%.3f;p99:p99 ms:%.3f;cpu:CPU us/req:%.2f"
{
  for p in 1 16; do
    for test in SET GET INCR; do
      mode=unpipelined; [ "$p" = 16 ] && mode="-P 16"
      echo "$(echo "$test" | tr '[:upper:]' '[:lower:]')-$p|$test, $clients clients, $mode|$served"
    done
  done
  echo "set-always|SET, fsync always, $clients clients|$served"
  for n in $connection_counts; do
    echo "conn-$n|$n connections, $window at once|connect:ms, all answered:%.0f;rss:RSS B/conn:%.0f"
    echo "burst-$n|$n connections, all at once|connect:ms, all answered:%.0f"
  done
  echo "keys|$keys keys, key:N, 37 B values|mem:RSS B/key:%.0f;start:start ms:%.0f"
  echo "big-keys|$big_keys keys, 16 B + 100 B|mem:RSS B/key:%.0f;start:start ms:%.0f"
} > "$work/rows"

table=$work/table
awk -v systems="$keystonelight redis null" -v notes="$notes" '
  BEGIN {
    ns = split(systems, sys, " ")
    for (i = 1; i <= ns; i++) {
      s = sys[i]
      title[s] = s == "ks" ? "keystonelight" : s == "ks-threads" ? "ks threads" : \
                 s == "ks-events" ? "ks events" : s
      short[s] = s == "ks" ? "ks" : s == "ks-threads" ? "thr" : "evt"
      if (s ~ /^ks/) ks[++nk] = s
    }
    head = sprintf("%-32s %-16s", "", "")
    for (i = 1; i <= ns; i++) head = head sprintf(" %11s", title[sys[i]])
    for (j = 1; j <= 2; j++) for (i = 1; i <= nk; i++)
      head = head sprintf(" %11s", short[ks[i]] "/" (j == 1 ? "redis" : "null"))
    print head
  }
  FILENAME == ARGV[1] { value[$1, $2, $3] = $4; seen[$1, $3] = 1; next }
  {
    split($0, f, "|"); nm = split(f[3], metrics, ";")
    for (m = 1; m <= nm; m++) {
      split(metrics[m], spec, ":")
      line = sprintf("%-32s %-16s", m == 1 ? f[2] : "", spec[2])
      for (i = 1; i <= ns; i++) {
        k = f[1] SUBSEP spec[1] SUBSEP sys[i]
        line = line sprintf(" %11s", (k in value) ? sprintf(spec[3], value[k]) : "-")
      }
      for (j = 1; j <= 2; j++) for (i = 1; i <= nk; i++) {
        a = f[1] SUBSEP spec[1] SUBSEP ks[i]; b = f[1] SUBSEP spec[1] SUBSEP (j == 1 ? "redis" : "null")
        line = line sprintf(" %11s", (a in value) && (b in value) && value[b] > 0 ? \
                            sprintf("%.2f", value[a] / value[b]) : "-")
      }
      sub(/ +$/, "", line); print line
    }
  }
  END { while ((getline note < notes) > 0) print "note: " note }' "$medians" "$work/rows" > "$table"

# The embedded table, when there are figures for it.
if grep -q '^emb-' "$medians"; then
  leveldb_version=$(dpkg-query -W -f '${Version}' libleveldb-dev 2>/dev/null | sed 's/-[^-]*$//')
  {
    echo
    echo "The embedded Store beside LevelDB ${leveldb_version:-(version unknown)}: $embedded_keys random 16-byte keys, 100-byte values;"
    echo "fill and read without fsync (FsyncPolicy::kNever; LevelDB's default WriteOptions), durable sets"
    echo "($((embedded_keys / 1000)), at least 200: FsyncPolicy::kAlways; LevelDB's sync = true); median of $runs runs."
    printf '%-32s %-16s %11s %11s %11s\n' "" "" keystonelight leveldb ks/leveldb
    awk '$1 ~ /^emb-/ { value[$1, $3] = $4 }
      END {
        n = split("emb-fill-1 emb-fill-2 emb-read-1 emb-read-2 emb-fillsync-1 emb-fillsync-2 emb-durable-4", rows, " ")
        label["emb-fill-1"] = "fill, random order, 1 thread"; label["emb-fill-2"] = "fill, random order, 2 threads"
        label["emb-read-1"] = "read, random keys, 1 thread"; label["emb-read-2"] = "read, random keys, 2 threads"
        label["emb-fillsync-1"] = "durable sets, 1 thread"; label["emb-fillsync-2"] = "durable sets, 2 threads"
        label["emb-durable-4"] = "durable sets, 4 threads"
        for (r = 1; r <= n; r++) {
          if (!((rows[r], "ks") in value)) continue
          a = value[rows[r], "ks"]; b = value[rows[r], "leveldb"]
          printf "%-32s %-16s %11.0f %11.0f %11s\n", label[rows[r]], "ops/s", a, b, \
                 (b > 0 ? sprintf("%.2f", a / b) : "-")
        }
      }' "$medians"
  } >> "$table"
fi

{
  echo "keystonelight-server against redis-server $redis_version and the null server; $(nproc) cores;"
  echo "medians of $runs alternating runs; $requests requests unpipelined, $pipelined with -P 16, $durable under fsync always."
  echo "Ratios: keystonelight / redis and keystonelight / null (above 1: more requests per second, or more time, CPU or memory)."
  cat "$table"
} > "$work/printed"
cat "$work/printed"
[ -n "$markdown" ] || exit 0

# ---------------------------------------------------------------------------------------
# The chart: requests per second and CPU per request for each served row, one bar per
# server, each group scaled to its largest figure (the figure is written at the bar's end).
# ---------------------------------------------------------------------------------------

draw_chart() {
  awk -v systems="$keystonelight redis null" -v subtitle="$1" '
    BEGIN {
      ns = split(systems, sys, " ")
      color["ks"] = color["ks-threads"] = "#4e79a7"; color["ks-events"] = "#59a14f"
      color["redis"] = "#e15759"; color["null"] = "#a0a0a0"
      name["ks"] = "keystonelight"; name["ks-threads"] = "keystonelight, --io threads"
      name["ks-events"] = "keystonelight, --io events"; name["redis"] = "redis-server"
      name["null"] = "null server (the ceiling)"
      panel["rps"] = "requests per second (higher is better)"; x0["rps"] = 230
      panel["cpu"] = "server CPU per request, us (lower is better)"; x0["cpu"] = 610
      width = 330; bar = 11
    }
    FILENAME == ARGV[1] { value[$1, $2, $3] = $4; next }
    $0 ~ /\|rps:/ { split($0, f, "|"); rows[++nr] = f[1]; label[nr] = f[2] }
    END {
      y = 112
      for (r = 1; r <= nr; r++) {
        top[r] = y; n = 0
        for (i = 1; i <= ns; i++) if ((rows[r], "rps", sys[i]) in value) n++
        y += n * (bar + 3) + 16
      }
      height = y + 10
      printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"%d\" viewBox=\"0 0 960 %d\" font-family=\"sans-serif\" font-size=\"12\">\n", height, height
      printf "<rect width=\"960\" height=\"%d\" fill=\"white\"/>\n", height
      printf "<text x=\"16\" y=\"26\" font-size=\"16\" font-weight=\"bold\">keystonelight-server, redis-server and a null server</text>\n"
      printf "<text x=\"16\" y=\"46\" fill=\"#555\">%s; each group is scaled to its largest figure</text>\n", subtitle
      lx = 16
      for (i = 1; i <= ns; i++) {
        printf "<rect x=\"%d\" y=\"58\" width=\"12\" height=\"12\" fill=\"%s\"/>", lx, color[sys[i]]
        printf "<text x=\"%d\" y=\"69\">%s</text>\n", lx + 17, name[sys[i]]
        lx += 30 + 7 * length(name[sys[i]])
      }
      for (p in panel) printf "<text x=\"%d\" y=\"98\" font-weight=\"bold\">%s</text>\n", x0[p], panel[p]
      for (r = 1; r <= nr; r++) {
        printf "<text x=\"16\" y=\"%d\">%s</text>\n", top[r] + bar, label[r]
        for (p in panel) {
          max = 0
          for (i = 1; i <= ns; i++) {
            k = rows[r] SUBSEP p SUBSEP sys[i]
            if ((k in value) && value[k] > max) max = value[k]
          }
          b = 0
          for (i = 1; i <= ns; i++) {
            k = rows[r] SUBSEP p SUBSEP sys[i]
            if (!(k in value)) continue
            w = max > 0 ? value[k] / max * (width - 80) : 0
            yy = top[r] + b * (bar + 3); b++
            printf "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>", x0[p], yy, w, bar, color[sys[i]]
            printf "<text x=\"%.1f\" y=\"%d\" font-size=\"10\">%s</text>\n", x0[p] + w + 4, yy + bar - 1, \
                   p == "rps" ? sprintf("%.0f", value[k]) : sprintf("%.2f", value[k])
          }
        }
        printf "<line x1=\"16\" x2=\"944\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n", top[r] - 6, top[r] - 6
      }
      print "</svg>"
    }' "$medians" "$work/rows"
}

# ---------------------------------------------------------------------------------------
# Issue 18's targets against the medians: each ratio keystonelight / redis beside the
# bound it should meet. Computed here, so that BENCHMARKS.md never needs a hand edit.
# ---------------------------------------------------------------------------------------

targets() {
  largest=$(echo "$connection_counts" | tr ' ' '\n' | sort -n | tail -n 1)
  awk -v systems="$keystonelight" -v largest="$largest" '
    BEGIN {
      ns = split(systems, sys, " ")
      # TARGET|ROWS|METRIC|BOUND|>= or <=
      spec[++nt] = "throughput unpipelined, at least 0.95x Redis|set-1 get-1 incr-1|rps|0.95|>="
      spec[++nt] = "throughput with -P 16, at least 1.1x Redis|set-16 get-16 incr-16|rps|1.1|>="
      spec[++nt] = "CPU per request, at most Redis|set-1 get-1 incr-1 set-16 get-16 incr-16|cpu|1|<="
      spec[++nt] = "SET under fsync always, at least 1.2x Redis|set-always|rps|1.2|>="
      spec[++nt] = "p99 latency, at most Redis|set-1 get-1 incr-1 set-16 get-16 incr-16 set-always|p99|1|<="
      spec[++nt] = "RSS per idle connection, at most Redis|conn-" largest "|rss|1|<="
      spec[++nt] = largest " connections answered, as fast as Redis|conn-" largest " burst-" largest "|connect|1|<="
      spec[++nt] = "memory per key, at most 0.8x Redis|keys big-keys|mem|0.8|<="
      spec[++nt] = "start-up, at most a third of Redis|keys big-keys|start|0.34|<="
    }
    FILENAME == ARGV[1] { split($0, f, "|"); label[f[1]] = f[2]; next }
    { value[$1, $2, $3] = $4 }
    END {
      head = "| target | row |"; rule = "|---|---|"
      for (i = 1; i <= ns; i++) { head = head " " sys[i] " / redis |"; rule = rule "---|" }
      print head; print rule
      for (t = 1; t <= nt; t++) {
        split(spec[t], f, "|"); nr = split(f[2], rows, " ")
        for (r = 1; r <= nr; r++) {
          line = "| " (r == 1 ? f[1] : "") " | " ((rows[r] in label) ? label[rows[r]] : rows[r]) " |"
          for (i = 1; i <= ns; i++) {
            a = rows[r] SUBSEP f[3] SUBSEP sys[i]; b = rows[r] SUBSEP f[3] SUBSEP "redis"
            if (!(a in value) || !(b in value) || value[b] <= 0) { line = line " - |"; continue }
            x = value[a] / value[b]
            met = f[5] == ">=" ? x >= f[4] : x <= f[4]
            miss = f[5] == ">=" ? (f[4] - x) / f[4] : (x - f[4]) / f[4]
            line = line sprintf(" %.2f, %s |", x, met ? "met" : sprintf("**missed by %.0f%%**", 100 * miss))
          }
          print line
        }
      }
    }' "$work/rows" "$medians"
}

# ---------------------------------------------------------------------------------------
# BENCHMARKS.md and the chart, written whole or not at all.
# ---------------------------------------------------------------------------------------

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
memory_mib=$(( $(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo) / 1024 ))
compiler=$(${BENCH_CXX:-g++} --version 2>/dev/null | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain -- keystonelight.hpp examples Makefile bench/server.sh "bench/*.cpp" 2>/dev/null)" ] && commit="$commit, with uncommitted changes"
today=$(date -u '+%Y-%m-%d %H:%M UTC')
if [ "$keystonelight" = ks ]; then
  io="one I/O model: keystonelight-server refused \`--io threads\` / \`--io events\` at a trial start"
else
  io="both I/O models: \`--io threads\` (a thread per connection) and \`--io events\` (the event loop)"
fi

draw_chart "medians of $runs alternating runs, $(nproc) cores, $today" > "$work/chart.svg"
{
  cat <<TEXT
# Benchmarks

<!-- Generated by \`make bench\` (bench/server.sh). Do not edit: run \`make bench\` again. -->

What \`make bench\` printed on the machine below: \`keystonelight-server\` beside
\`redis-server\` and a null server (\`bench/null-server.cpp\`: a few lines of epoll that answer
\`+OK\` to every request and do nothing else, the ceiling of this client on this machine).
Figures from a shared machine are noisy; read the ratios of one run, not the absolute
figures of two.

| | |
|---|---|
| date | $today |
| machine | $cpu_model, $(nproc) cores, $memory_mib MiB |
| system | $(uname -srm) |
| compiler | $compiler, \`-O2 -DNDEBUG\` |
| commit | $commit |
| Redis | redis-server $redis_version, \`--appendonly yes\`, \`--save ''\` |
| keystonelight | $io |
| runs | median of $runs runs alternating the servers (BENCH_RUNS) |
| sizes | $requests requests unpipelined (BENCH_REQUESTS), $pipelined with \`-P 16\` (BENCH_PIPELINED_REQUESTS), $durable under fsync always (BENCH_FSYNC_REQUESTS), $keys keys (BENCH_KEYS), connections: $connection_counts (BENCH_CONNECTIONS), at most $window waiting at once (BENCH_CONNECT_WINDOW), then all at once; \`ulimit -n\` $fd_limit |

${svg:+![requests per second and CPU per request]($svg)}

## The table, as printed

\`\`\`text
TEXT
  cat "$work/printed"
  cat <<'TEXT'
```

## What each row measures

- **req/s, p50 ms, p99 ms**: `redis-benchmark -c 50 --csv -t TEST`, unpipelined or `-P 16`,
  against a server under fsync everysec (Redis: `appendfsync everysec`), and SET under fsync
  always (Redis: `appendfsync always`). The latencies are redis-benchmark's own percentiles.
- **CPU us/req**: the server's user + system time (`/proc/PID/stat`, before and after one
  redis-benchmark run) over the requests of that run. The client shares the machine and
  saturates first, so requests per second hide what a server spends; this does not. The
  null server's figure is the floor of the system calls themselves.
- **N connections**: `bench/connections.cpp` opens N connections and sends PING on each,
  first with at most BENCH_CONNECT_WINDOW (500) waiting for their answer at once, below
  the listen backlog of 511, so the figure is the server's accepting and answering; then,
  on a fresh server, all at once, as a crowd would arrive, where a full backlog costs the
  kernel's one-second SYN retry; *ms, all answered* is the time
  until every one has its answer. *RSS B/conn* is the growth of the server's VmRSS
  (`/proc/PID/status`) over N, the connections open and idle.
- **keys**: *RSS B/key* is the growth of the server's VmRSS while the keys are written
  (`redis-cli --pipe`, keys `key:N`, 37-byte values); *start ms* the time from starting the
  program on that log until it answers PING. **big-keys**: the same with keys of 16 bytes
  (`key:000000000042`) and 100-byte values.
- **The embedded table** (when libleveldb-dev is installed): `bench/embedded.cpp` writes
  the keys in a random order into a fresh Store, then into a fresh LevelDB (the order of
  the two alternates between runs), from 1 thread and then from 2, each thread its share
  of the keys, then reads as many keys picked at random, all present; then durable sets
  (FsyncPolicy::kAlways, LevelDB's `sync = true`) of a thousandth as many keys, from 1, 2
  and 4 threads, each engine in a fresh folder.
- Ratios divide keystonelight's figure by Redis's or the null server's, whatever the unit:
  above 1 is better for req/s, worse for every other figure.

## Issue 18's targets

Each ratio keystonelight / redis from the table, beside the bound it should meet.

TEXT
  targets
  if [ -f bench/notes.md ]; then
    printf '\n## Notes (bench/notes.md)\n\n'
    cat bench/notes.md
  fi
} > "$work/BENCHMARKS.md"
mv "$work/BENCHMARKS.md" "$markdown.tmp" && mv "$markdown.tmp" "$markdown"
if [ -n "$svg" ]; then mv "$work/chart.svg" "$svg.tmp" && mv "$svg.tmp" "$svg"; fi
echo "bench: wrote $markdown${svg:+ and $svg}"
