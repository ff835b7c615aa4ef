#!/usr/bin/env bash
# redis-test-units.sh REDIS_SRC_DIR [--server redis|keystonelight] [OPTION]... [UNIT]... [-- RUNTEST_ARG...]
#
# Runs units of Redis's own Tcl test suite (tests/unit/*.tcl of a Redis source tree, e.g.
# 7.0.15) against a server started here as Redis's "external server": for each unit, a fresh
# server on 127.0.0.1, on a free ephemeral port, in a temporary directory; then
#   ./runtest --host 127.0.0.1 --port N --singledb --ignore-encoding --ignore-digest
#             --durable --timeout T --single UNIT
# from REDIS_SRC_DIR, bounded by `timeout`; then the server is stopped by its pid. It prints,
# per unit, the tests passed, failed and skipped by tag, and the name and first message line
# of every failed test, then a table. Nothing of Redis's is copied into this repository.
#
# Why these runtest flags:
#   --host/--port      external-server mode: the suite connects instead of spawning servers,
#                      and skips the tests tagged external:skip
#   --singledb         no SELECT 9 on every connection (Keystonelight has database 0 only);
#                      skips the tests tagged singledb:skip
#   --ignore-encoding  assert_encoding (OBJECT ENCODING) becomes a no-op
#   --ignore-digest    DEBUG DIGEST / DIGEST-VALUE checks become no-ops
#   --durable          a Tcl error inside a test (an unknown command, say) fails that test
#                      instead of aborting the whole run
#
# The shim (default on; --no-shim turns it off): before every start_server block, Redis's
# harness sends FLUSHALL and FUNCTION FLUSH, outside any test. A server without FUNCTION
# fails there and the whole unit aborts with no test run. The shim wraps the suite's `r`
# helper so that FUNCTION FLUSH answered by "unknown command" counts as done; nothing else
# changes. It is a few lines of Tcl written to the temporary directory and loaded through
# `--single` (a wrapper that installs it and then sources the real unit), so Redis's files
# stay untouched. Against redis-server it is a no-op.
#
# Options:
#   --server redis|keystonelight   which server to start (default keystonelight)
#   --redis-server PATH            redis-server binary (default: redis-server on PATH)
#   --keystonelight-server PATH    keystonelight-server binary (default: build this
#                                  repository's build/bin/keystonelight-server with make)
#   --unit-timeout SECONDS         wall-clock bound for one unit (default 600)
#   --test-timeout SECONDS         runtest's own bound for one test (default 60)
#   --no-shim                      run Redis's harness exactly as it is (see above)
#   --logs DIR                     keep each unit's runtest output and server log in DIR
#   --trace FILE                   append one line per command the suite's client sends:
#                                  UNIT<TAB>TEST<TAB>COMMAND [SUBCOMMAND [CONFIG PARAMETER]]
#                                  (for SET, its options: set ex get ...)
#                                  (TEST is empty outside a test); run it against redis to
#                                  learn which commands each test needs. Raw-protocol writes
#                                  and commands inside scripts are not seen.
#   -v, --verbose                  also print every [ok]/[ignore] line
#   -h, --help                     this text
# Arguments after `--` go to runtest unchanged (e.g. -- --tags -needs:debug).
# Default units: unit/type/string unit/type/incr unit/keyspace unit/expire unit/multi unit/scan
#
# Exit status: 0 when every test run passed, 1 when a test failed or a unit did not finish,
# 2 for a usage error or when a server cannot be built or started.
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

script_dir=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in -h|--help) usage; exit 0 ;; esac
redis_src=$1; shift
[ -d "$redis_src" ] || die "REDIS_SRC_DIR '$redis_src' is not a directory"
redis_src=$(cd "$redis_src" && pwd)
[ -x "$redis_src/runtest" ] && [ -f "$redis_src/tests/test_helper.tcl" ] ||
  die "'$redis_src' has no runtest and tests/test_helper.tcl: give the top of a Redis source tree"

server=keystonelight
redis_bin=
kl_bin=
unit_timeout=600
test_timeout=60
shim=1
logs=
trace=
verbose=0
units=()
extra=()
need() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --server) need "$@"; server=$2; shift 2 ;;
    --server=*) server=${1#*=}; shift ;;
    --redis-server) need "$@"; redis_bin=$2; shift 2 ;;
    --keystonelight-server) need "$@"; kl_bin=$2; shift 2 ;;
    --unit-timeout) need "$@"; unit_timeout=$2; shift 2 ;;
    --test-timeout) need "$@"; test_timeout=$2; shift 2 ;;
    --no-shim) shim=0; shift ;;
    --logs) need "$@"; logs=$2; shift 2 ;;
    --trace) need "$@"; trace=$2; shift 2 ;;
    -v|--verbose) verbose=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) units+=("${1%.tcl}"); shift ;;
  esac
done
case $server in redis|keystonelight) ;; *) die "--server must be redis or keystonelight, not '$server'" ;; esac
[[ $unit_timeout =~ ^[1-9][0-9]*$ ]] || die "--unit-timeout wants a positive number of seconds"
[[ $test_timeout =~ ^[1-9][0-9]*$ ]] || die "--test-timeout wants a positive number of seconds"
[ ${#units[@]} -gt 0 ] ||
  units=(unit/type/string unit/type/incr unit/keyspace unit/expire unit/multi unit/scan)
for u in "${units[@]}"; do
  u=${u#tests/}
  [ -f "$redis_src/tests/$u.tcl" ] || die "no unit '$u': $redis_src/tests/$u.tcl does not exist"
done
command -v tclsh >/dev/null || die "tclsh (8.5 or newer) is needed by Redis's runtest; install tcl"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
if [ -n "$trace" ]; then
  : >>"$trace" || die "cannot write --trace file '$trace'"
  trace=$(cd "$(dirname "$trace")" && pwd)/$(basename "$trace")
fi
if [ -n "$logs" ]; then mkdir -p "$logs" || die "cannot create --logs directory '$logs'"; logs=$(cd "$logs" && pwd); fi

# The server binary.
if [ "$server" = redis ]; then
  redis_bin=${redis_bin:-$(command -v redis-server || true)}
  [ -n "$redis_bin" ] && [ -x "$redis_bin" ] ||
    die "no redis-server: install it (apt-get install redis-server) or pass --redis-server PATH"
  echo "server: $("$redis_bin" --version | head -n 1)"
else
  if [ -z "$kl_bin" ]; then
    kl_bin=$repo_root/build/bin/keystonelight-server
    echo "building $kl_bin ..."
    make -C "$repo_root" --no-print-directory build/bin/keystonelight-server >&2 ||
      die "make build/bin/keystonelight-server failed in $repo_root"
  fi
  [ -x "$kl_bin" ] || die "keystonelight-server '$kl_bin' is not an executable"
  echo "server: $("$kl_bin" --version | head -n 1)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/redis-test-units.XXXXXX") || die "mktemp failed"
server_pid=
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "$prog: server pid $server_pid ignored SIGTERM for 5 s; sending SIGKILL" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
runner_pid=
stop_runner() {
  [ -n "$runner_pid" ] || return 0
  kill -TERM "$runner_pid" 2>/dev/null || true   # timeout passes it on to runtest's group
  wait "$runner_pid" 2>/dev/null || true
  runner_pid=
}
cleanup() { stop_runner; stop_server; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  echo 'set s [socket -server none -myaddr 127.0.0.1 0]; puts [lindex [fconfigure $s -sockname] 2]; close $s' | tclsh
}
# ping PORT: 0 when a PING on 127.0.0.1:PORT is answered +PONG.
ping() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 line <&3 || line=
  exec 3>&- 3<&-
  [ "${line%$'\r'}" = +PONG ]
}

# start_server DIR: starts the chosen server in DIR; sets server_pid and port.
start_server() {
  local dir=$1 tries
  mkdir -p "$dir"
  for tries in 1 2 3; do
    if [ "$server" = redis ]; then
      port=$(free_port)
      # The flags the suite's own default.conf sets for what the units use (DEBUG, CONFIG
      # SET of protected configs), without persistence.
      "$redis_bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
        --save '' --appendonly no --logfile "$dir/server.log" \
        --enable-debug-command yes --enable-protected-configs yes --enable-module-command yes \
        >/dev/null 2>&1 &
      server_pid=$!
    else
      port=
      "$kl_bin" --port 0 --bind 127.0.0.1 --dir "$dir/data" >"$dir/server.log" 2>&1 &
      server_pid=$!
    fi
    for _ in $(seq 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      if [ -z "$port" ]; then
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$dir/server.log" | head -n 1)
      fi
      if [ -n "$port" ] && ping "$port"; then return 0; fi
      sleep 0.1
    done
    echo "$prog: the $server server (pid $server_pid) did not answer PING; its log:" >&2
    tail -n 20 "$dir/server.log" >&2 || true
    stop_server
  done
  die "cannot start the $server server (3 attempts)"
}

# The shim, loaded through --single as a wrapper around the real unit (see the top).
make_wrapper() {
  local unit=$1 wrapper=$2
  mkdir -p "$(dirname "$wrapper")"
  {
    if [ "$shim" = 1 ]; then
      cat <<'TCL'
# Written by redis-test-units.sh: tolerate a server without FUNCTION in the harness's
# per-block FUNCTION FLUSH; every other command goes through unchanged.
if {[info commands __redis_test_units_r] eq ""} {
    rename r __redis_test_units_r
    proc r {args} {
        if {[llength $args] == 2 && [string equal -nocase [lindex $args 0] function]
                && [string equal -nocase [lindex $args 1] flush]} {
            set rc [catch {__redis_test_units_r {*}$args} res opts]
            if {$rc == 1 && [string match -nocase {*unknown command*} $res]} { return OK }
            return -options $opts $res
        }
        tailcall __redis_test_units_r {*}$args
    }
}
TCL
    fi
    if [ -n "$trace" ]; then
      printf 'set ::__rtu_unit {%s}\nset ::__rtu_trace [open {%s} a]\n' "$unit" "$trace"
      cat <<'TCL'
# Written by redis-test-units.sh --trace: log each command the suite's client sends.
fconfigure $::__rtu_trace -buffering line -translation lf
if {[info commands ::redis::__rtu_dispatch_raw__] eq ""} {
    rename ::redis::__dispatch__raw__ ::redis::__rtu_dispatch_raw__
    proc ::redis::__dispatch__raw__ {id method argv} {
        if {[info commands ::redis::__method__$method] eq ""} {
            set words [list [string tolower $method]]
            if {[lsearch -exact {config debug object client function script memory command acl
                    cluster xgroup xinfo module latency slowlog} [lindex $words 0]] >= 0} {
                set n [expr {[string equal -nocase [lindex $argv 0] set] ? 2 : 1}]
                foreach a [lrange $argv 0 [expr {$n - 1}]] { lappend words [string tolower $a] }
            } elseif {[lindex $words 0] eq "set"} {
                foreach a [lrange $argv 2 end] {
                    set a [string tolower $a]
                    if {$a in {nx xx get ex px exat pxat keepttl}} { lappend words $a }
                }
            }
            set test [string map {\t { } \n { }} $::cur_test]
            regsub { in tests/.*\.tcl$} $test {} test
            puts $::__rtu_trace "$::__rtu_unit\t$test\t[join $words { }]"
        }
        tailcall ::redis::__rtu_dispatch_raw__ $id $method $argv
    }
}
TCL
    fi
    printf 'set ::curfile tests/%s.tcl\nsource $::curfile\n' "$unit"
  } >"$wrapper"
}

# summarize UNIT OUTPUT STATUS SECONDS: prints the unit's figures; appends a table row.
rows=()
any_failed=0
summarize() {
  local unit=$1 out=$2 status=$3 secs=$4 passed failed ignored state
  passed=$(grep -c '^\[ok\]: ' "$out" || true)
  failed=$(grep -c '^\[err\]: ' "$out" || true)
  ignored=$(grep -c '^\[ignore\]: ' "$out" || true)
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then state="killed after ${unit_timeout}s (--unit-timeout)"
  elif grep -q '^\[exception\]: ' "$out"; then state="aborted by an exception"
  elif grep -q '^\[TIMEOUT\]: ' "$out"; then state="aborted: a test ran past --test-timeout"
  elif grep -q "^\[[0-9]*/[0-9]* done\]: " "$out"; then state=finished
  else state="did not finish (runtest exit status $status)"
  fi
  [ "$state" = finished ] && [ "$failed" = 0 ] || any_failed=1
  printf '%-22s passed %4d  failed %4d  skipped-by-tag %3d  %4ds  %s\n' \
    "$unit" "$passed" "$failed" "$ignored" "$secs" "$state"
  # Each failure: its name, then the first line of its message. For a Tcl error (not an
  # assertion) runtest cuts 10 characters off the message and appends the error info, whose
  # first line is the whole message: print that one instead.
  awk '
    function flush() {
      if (name == "") return
      reason = (l2 != "" && l3 != "" && index(l3, l2) > 0) ? l3 : l2
      if (length(reason) > 160) reason = substr(reason, 1, 157) "..."
      printf "    %s\n        %s\n", name, reason
      name = ""
    }
    /^\[(ok|err|ignore|skip|exception|TIMEOUT)\]: |^\[[0-9]+\/[0-9]+ done\]: |^ *The End$/ {
      flush()
    }
    /^\[err\]: / {
      name = substr($0, 8); n = 0; l2 = ""; l3 = ""
      if (name ~ / in tests\/.*\.tcl$/) { sub(/ in tests\/.*\.tcl$/, "", name); name = "[err] " name }
      else { l2 = name; name = "[err] (outside any test: the rest of its start_server block did not run)" ; n = 1 }
      next
    }
    /^\[(exception|TIMEOUT)\]: / { name = $0; n = 0; l2 = ""; l3 = ""; next }
    name != "" { n++; if (n == 1) l2 = $0; else if (n == 2) l3 = $0; next }
    END { flush() }
  ' "$out"
  if [ "$verbose" = 1 ]; then grep -E '^\[(ok|ignore)\]: ' "$out" | sed 's/^/    /' || true; fi
  rows+=("$(printf '| %s | %d | %d | %d | %s |' "$unit" "$passed" "$failed" "$ignored" "$state")")
}

run_flags=(--singledb --ignore-encoding --ignore-digest --durable --timeout "$test_timeout")
echo "runtest flags: ${run_flags[*]} ${extra[*]:-}$([ "$shim" = 1 ] && echo ' (with the FUNCTION FLUSH shim)' || echo ' (no shim)')"
total_start=$(date +%s)
for u in "${units[@]}"; do
  u=${u#tests/}
  slug=${u//\//_}
  dir=$work/$slug
  start_server "$dir/server"
  wrapper=$work/wrappers/$u.tcl
  make_wrapper "$u" "$wrapper"
  rel=$(realpath --relative-to="$redis_src/tests" "${wrapper%.tcl}")
  out=$dir/runtest.out
  start=$(date +%s)
  status=0
  # runtest's test server and client find their own ports; TERM=dumb keeps colours out.
  # In the background, so that an interrupt reaches the trap at once; timeout runs runtest
  # in a process group of its own and signals the whole group (runtest's test client too).
  (cd "$redis_src" && TERM=dumb exec timeout --kill-after=10 "$unit_timeout" \
     ./runtest --host 127.0.0.1 --port "$port" "${run_flags[@]}" ${extra[@]+"${extra[@]}"} \
     --single "$rel") >"$out" 2>&1 </dev/null &
  runner_pid=$!
  wait "$runner_pid" || status=$?
  runner_pid=
  secs=$(( $(date +%s) - start ))
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "$prog: the $server server died during $u; the end of its log:" >&2
    tail -n 20 "$dir/server/server.log" >&2 || true
    any_failed=1
  fi
  stop_server
  summarize "$u" "$out" "$status" "$secs"
  if [ -n "$logs" ]; then
    cp "$out" "$logs/$server-$slug.runtest.out"
    cp "$dir/server/server.log" "$logs/$server-$slug.server.log" 2>/dev/null || true
  fi
done

echo
echo "$server, $(( $(date +%s) - total_start ))s:"
echo "| unit | passed | failed | skipped by tag | state |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
exit "$any_failed"
