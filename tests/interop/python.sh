#!/bin/bash
# python.sh [SERVER | --redis]: the Python interoperability tests, redis-py and Django's
# cache through django-redis (redis_py_test.py and django_cache_test.py beside this
# script), against a private server started here.
#
#   bash tests/interop/python.sh                       build/bin/keystonelight-server
#   bash tests/interop/python.sh build/bin/keystonelight-server
#   bash tests/interop/python.sh --redis               redis-server, as the reference
#
# Run from the repository root. The server binds 127.0.0.1 on a free port, keeps its data
# in a temporary folder, and is stopped by its pid when the script ends, however it ends.
# The tests run with Debian's /usr/bin/python3 (the python3 first on PATH may be another,
# without these modules); python3-redis and python3-django-redis are installed with
# tools/ensure-package.sh when missing. Each test prints TAP; the last line counts every
# check: "python-interop: P passed, F failed". Every wait is bounded: the server has 10 s
# to start, each test PYTHON_TEST_SECONDS (120).
suite=python-interop
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../support/script.sh"
python=/usr/bin/python3
test_seconds=${PYTHON_TEST_SECONDS:-120}

case "${1:-}" in
  --redis) kind=redis ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "python.sh: unknown flag $1 (try --help)"; exit 2 ;;
  *) kind=keystonelight server=${1:-build/bin/keystonelight-server} ;;
esac

bounded() {
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else shift; "$@"; fi
}

pid=
work=$(mktemp -d) || exit 1
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; nap; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Without the Python packages (and no root to install them) the tests are skipped, loudly,
# as the redis-cli tests are without redis-tools; CI installs them first, so it never skips.
skip_all() {
  echo "python-interop: skipped: $1; as root: apt-get install -y python3-redis python3-django-redis"
  echo "$suite: 0 passed, 0 failed"
  exit 0
}
[ -x "$python" ] || skip_all "$python is missing"
sh "$here/../../tools/ensure-package.sh" python3-redis "$python" -c 'import redis' ||
  skip_all "redis-py is missing for $python (python3-redis)"
sh "$here/../../tools/ensure-package.sh" python3-django-redis "$python" -c 'import django_redis' ||
  skip_all "django-redis is missing for $python (python3-django-redis)"

# free_port: a port nobody listens on now (the system's pick; it may be taken again
# before the server binds it, so start_redis tries again when its server exits).
free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_keystonelight: sets $pid and $port; the server picks its own port (--port 0) and
# says which in its log.
start_keystonelight() {
  [ -x "$server" ] || give_up "error: $server is missing; build it first (make $server)"
  "$server" --port 0 --bind 127.0.0.1 --dir "$work/data" > "$work/server.log" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 100); do
    if grep -qs 'ready for connections' "$work/server.log"; then
      port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.log" | head -n 1)
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    nap
  done
}

# start_redis: sets $pid and $port. The server is ours once its own log says it is ready
# and its pid is alive: never talk to whatever else may listen on a port.
start_redis() {
  command -v redis-server >/dev/null 2>&1 ||
    sh "$here/../../tools/ensure-package.sh" redis-server sh -c 'command -v redis-server' ||
    give_up "error: redis-server is missing (apt-get install -y redis-server)"
  mkdir -p "$work/data"
  for _ in 1 2 3 4 5; do
    port=$(free_port) || give_up "error: $python cannot pick a free port"
    : > "$work/server.log"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --dir "$work/data" --logfile "$work/server.log" &
    pid=$!
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      grep -qs 'Ready to accept connections' "$work/server.log" && return 0
      nap
    done
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
  done
  port=
}

if [ "$kind" = redis ]; then
  start_redis
  name="redis-server ($(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'))"
else
  start_keystonelight
  name=$server
fi
if [ -z "$port" ]; then
  out=$(tail -n 20 "$work/server.log" 2>/dev/null)
  give_up "error: $name did not start on 127.0.0.1 within 10 s; its log:
$(printf '%s\n' "$out" | sed 's/^/    | /')"
fi
echo "python.sh: $name on 127.0.0.1:$port, $("$python" -c \
  'import redis, django, django_redis as d; print(f"redis-py {redis.__version__}, Django {django.__version__}, django-redis {d.__version__}")')"

# run_test FILE: runs one test (emptying the database first: the server is ours), shows
# its TAP, and counts its checks. A test that ends without its checks counted (it bailed
# out, crashed or timed out) counts as one failure more.
run_test() {
  echo "== $1"
  bounded "$test_seconds" "$python" "$here/$1" --flush "$port" > "$work/tap" 2>&1
  code=$?
  cat "$work/tap"
  # A skipped check (`ok N - name # SKIP reason`) is neither passed nor failed.
  s=$(grep -c '^ok .* # SKIP ' "$work/tap")
  p=$(($(grep -c '^ok ' "$work/tap") - s)) f=$(grep -c '^not ok ' "$work/tap")
  plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$work/tap" | head -n 1)
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if [ "$code" -eq 124 ]; then
    out=; not_ok "$1 timed out after $test_seconds s"
  elif [ -z "$plan" ] || [ $((p + f + s)) -ne "$plan" ]; then
    out=; not_ok "$1 ran $((p + f + s)) of ${plan:-its} checks (exit $code)"
  elif [ "$code" -ne 0 ] && [ "$f" -eq 0 ]; then
    out=; not_ok "$1 exited with status $code"
  fi
}

skipped=0
run_test redis_py_test.py
run_test django_cache_test.py
[ "$skipped" -eq 0 ] || echo "python-interop: $skipped skipped (see the # SKIP lines above)"

if ! kill -0 "$pid" 2>/dev/null; then
  out=$(tail -n 20 "$work/server.log")
  not_ok "$name exited during the tests; the end of its log:"
fi
summary
