#!/bin/sh
# server.sh BUILD: keystonelight-server as its users run it, from outside. Wrong flags exit
# 2 naming the flag; a second instance exits 1 naming the first; after kill -9 a new one
# takes the stale PID file over; SIGHUP compacts under write load and loses nothing;
# SIGTERM and SHUTDOWN with clients connected exit 0, remove the PID file and keep every
# acknowledged write; a client that vanishes mid-reply does not kill the server (SIGPIPE);
# and `make run` in a fresh copy of the project starts the server on its defaults.
# Run from the repository root; the program is BUILD/bin/keystonelight-server. Every
# server here binds 127.0.0.1 on a port the system picks (except `make run`, which must
# show the default 6380), and every wait is bounded.
build=${1:-build}
server=$build/bin/keystonelight-server
suite=server
. "$(dirname "$0")/../support/script.sh"
show_lines=15
pids=

work=$(mktemp -d) || exit 1
cleanup() {
  for pid in $pids; do kill -9 "$pid" 2>/dev/null; done
  # make run's server is make's child: stop it by its PID file, if it got that far.
  [ -f "$work/fresh/data/keystonelight.pid" ] && kill -9 "$(cat "$work/fresh/data/keystonelight.pid")" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# until_true TENTHS COMMAND...: runs COMMAND every tenth of a second until it succeeds,
# at most TENTHS times; whether it did.
until_true() {
  tries=$1; shift
  while [ "$tries" -gt 0 ]; do
    if "$@"; then return 0; fi
    nap
    tries=$((tries - 1))
  done
  return 1
}

# start NAME ARGS...: starts the server in the background with its log in
# $work/NAME.log; sets $pid, and $port once the log says it is ready (empty on failure).
start() {
  name=$1; shift
  "$server" --port 0 "$@" > "$work/$name.log" 2>&1 &
  pid=$!
  pids="$pids $pid"
  port=
  if until_true 100 grep -qs 'ready for connections' "$work/$name.log"; then
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name.log")
  fi
}

# finish PID: waits for the process to exit, at most 10 s; sets $code (124: still running).
finish() {
  if until_true 100 sh -c "! kill -0 $1 2>/dev/null"; then
    wait "$1"; code=$?
  else
    code=124
  fi
}

if [ ! -x "$server" ]; then
  give_up "error: $server is missing; build it first (make $server)"
fi

# A client, compiled against the header: the tests must not depend on redis-cli.
cat > "$work/client.cpp" <<'EOF'
// client PORT WORD...                 runs one command, prints the reply (nil, text, number)
// client load PORT SECONDS FILE       overwrites 100 keys in a loop until the time is up or
//                                     the server goes; FILE gets "key counter" for the
//                                     last write of each key that was acknowledged
// client verify PORT FILE             every key of FILE holds at least that counter
// client hold PORT N SECONDS          holds N idle connections until the server closes them
//                                     (the client's own timeout, 10 s, ends the wait)
// client greedy PORT                  asks for replies it never reads, then hangs up
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

std::unique_ptr<kl::Client> connect(const char* port) {
  std::unique_ptr<kl::Client> client;
  kl::Status s = kl::Client::connect("127.0.0.1", std::atoi(port), &client);
  if (!s.ok()) {
    std::fprintf(stderr, "client: %s\n", s.to_string().c_str());
    std::exit(3);
  }
  return client;
}

std::string value_of(int counter) {
  std::string text = std::to_string(counter);
  return std::string(100 - text.size(), '0') + text;  // fixed width: garbage adds up
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  if (mode == "load" && argc == 5) {
    auto client = connect(argv[2]);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(std::atoi(argv[3]));
    std::map<std::string, int> acknowledged;
    kl::Reply reply;
    for (int i = 1; std::chrono::steady_clock::now() < end; ++i) {
      const std::string key = "key" + std::to_string(i % 100);
      if (!client->command({"SET", key, value_of(i)}, &reply).ok() || reply.text != "OK") break;
      acknowledged[key] = i;
    }
    std::ofstream out(argv[4]);
    for (const auto& [key, counter] : acknowledged) out << key << " " << counter << "\n";
    return acknowledged.empty() ? 1 : 0;
  }
  if (mode == "verify" && argc == 4) {
    auto client = connect(argv[2]);
    std::ifstream in(argv[3]);
    std::string key;
    int counter = 0, checked = 0;
    kl::Reply reply;
    while (in >> key >> counter) {
      if (!client->command({"GET", key}, &reply).ok()) return 3;
      if (reply.type != kl::Reply::Type::kBulk || std::atoi(reply.text.c_str()) < counter) {
        std::fprintf(stderr, "client: %s holds '%s', acknowledged %d\n", key.c_str(),
                     reply.text.c_str(), counter);
        return 1;
      }
      ++checked;
    }
    std::printf("%d keys verified\n", checked);
    return checked > 0 ? 0 : 1;
  }
  if (mode == "hold" && argc == 5) {
    std::vector<std::unique_ptr<kl::Client>> held;
    for (int i = 0; i < std::atoi(argv[3]); ++i) held.push_back(connect(argv[2]));
    std::printf("holding\n");
    std::fflush(stdout);
    kl::Reply reply;  // a read ends when the server closes the connection
    return held.front()->read(&reply).ok() ? 1 : 0;
  }
  if (mode == "greedy") {
    auto client = connect(argv[2]);
    kl::Reply reply;
    if (!client->command({"SET", "big", std::string(1 << 20, 'b')}, &reply).ok()) return 3;
    for (int i = 0; i < 64; ++i) client->send({"GET", "big"});
    kl::Status s = client->flush();
    return s.ok() ? 0 : 3;  // and closes without reading a reply
  }
  auto client = connect(argv[1]);
  kl::Reply reply;
  if (!client->command(std::vector<std::string>(argv + 2, argv + argc), &reply).ok()) return 3;
  if (reply.type == kl::Reply::Type::kNil) std::printf("(nil)\n");
  else if (reply.type == kl::Reply::Type::kInteger) std::printf("%lld\n", static_cast<long long>(reply.integer));
  else std::printf("%s\n", reply.text.c_str());
  return reply.type == kl::Reply::Type::kError ? 1 : 0;
}
EOF
if ! ${CXX:-g++} -std=c++17 -O1 -I. -pthread "$work/client.cpp" -o "$work/client"; then
  give_up "error: the test client does not compile against keystonelight.hpp"
fi
client=$work/client

# A log of many records, written straight in the log's format (far faster than through a
# server), for a replay that lasts long enough to be interrupted.
cat > "$work/biglog.cpp" <<'EOF'
// biglog DIR N: writes DIR/keystonelight.log holding N puts of distinct keys.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string path = kl::detail::path_in(argv[1], kl::kLogFileName);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 1;
  std::string out = kl::detail::encode_file_header();
  const long n = std::atol(argv[2]);
  for (long i = 0; i < n; ++i) {
    kl::detail::encode_record(kl::RecordType::kPut, "key" + std::to_string(i), "value-of-sixteen",
                              0, &out);
    if (out.size() > (1 << 20) || i + 1 == n) {
      if (std::fwrite(out.data(), 1, out.size(), f) != out.size()) return 1;
      out.clear();
    }
  }
  return std::fclose(f) == 0 ? 0 : 1;
}
EOF
if ! ${CXX:-g++} -std=c++17 -O1 -I. -pthread "$work/biglog.cpp" -o "$work/biglog"; then
  give_up "error: the log generator does not compile against keystonelight.hpp"
fi

# --- Wrong flags: exit 2, the flag named, the usage shown. ------------------------------
for case in "--prot 7000|unknown flag '--prot'" "--bogus|unknown flag '--bogus'" \
            "--port 0 --bogus|unknown flag '--bogus'" "--port 70000|--port: '70000' is not a port" \
            "--fsync sometimes|--fsync: 'sometimes' is not a policy" \
            "--max-clients 0|--max-clients: '0'" "--compact-ratio 0.5|--compact-ratio: '0.5'" \
            "--max-clients-output-bytes 0|--max-clients-output-bytes: '0'" \
            "--log-level loud|--log-level: 'loud'" "--dir|--dir: a value is needed" \
            "--io fibers|--io: 'fibers' is not an I/O model" "--loops many|--loops: 'many'" \
            "port=1|'port=1' is not a flag"; do
  args=${case%%|*} want=${case#*|}
  # shellcheck disable=SC2086  # the flags are meant to split
  out=$("$server" $args 2>&1); code=$?
  if [ "$code" -eq 2 ] && printf '%s\n' "$out" | grep -qF -- "$want" &&
     printf '%s\n' "$out" | grep -qF 'usage: keystonelight-server'; then
    ok
  else
    not_ok "'$args' exits 2 naming the flag (exit $code)"
  fi
done
out=$("$server" --help); code=$?
holds "--help prints the usage and exits 0" [ "$code" -eq 0 ]
out=$("$server" --version)
holds "--version prints the version" [ "${out#keystonelight-server }" != "$out" ]

# --- Start-up, a second instance, kill -9, the stale PID file. --------------------------
data=$work/data
start first --dir "$data"
first=$pid
holds "the server starts on a free port and says so" [ -n "$port" ]
has "the start-up log names the version and pid" "$work/first.log" "starting, pid $first"
has "the start-up log names the directory and the keys loaded" "$work/first.log" \
    "data directory $data: 0 keys loaded from 0 records in"
holds "the PID file holds the pid" [ "$(cat "$data/keystonelight.pid" 2>/dev/null)" = "$first" ]
out=$("$client" "$port" SET greeting hello)
holds "it answers commands" [ "$out" = "OK" ]

"$server" --port 0 --dir "$data" > "$work/second.log" 2>&1; code=$?
holds "a second instance on the same PID file exits 1" [ "$code" -eq 1 ]
has "... and names the first one" "$work/second.log" \
    "keystonelight-server is already running as pid $first (PID file $data/keystonelight.pid)"
holds "... and leaves the first one's PID file alone" \
    [ "$(cat "$data/keystonelight.pid" 2>/dev/null)" = "$first" ]

kill -9 "$first"
finish "$first"
start third --dir "$data"
holds "after kill -9 a new instance starts" [ -n "$port" ]
has "... and reports the stale PID file" "$work/third.log" \
    "PID file $data/keystonelight.pid held pid $first, but no process holds its lock, so no server is using it: taken over"
has "... and finds the data written before the kill" "$work/third.log" "1 keys loaded"
out=$("$client" "$port" GET greeting)
holds "... which it serves" [ "$out" = "hello" ]

# --- SIGHUP under write load: the log shrinks, nothing acknowledged is lost. -----------
"$client" load "$port" 3 "$work/hup.acked" &
loader=$!
sleep 1
kill -HUP "$pid"
wait "$loader"; code=$?
holds "the writer wrote through the compaction" [ "$code" -eq 0 ]
has "SIGHUP compacts, and says so" "$work/third.log" "SIGHUP: compacting the log"
sizes=$(sed -n 's/.*log compacted from \([0-9]*\) to \([0-9]*\) bytes.*/\1 \2/p' "$work/third.log")
shrank=no
[ -n "$sizes" ] && [ "${sizes#* }" -lt "${sizes% *}" ] && shrank=yes
holds "the compaction shrank the log ($sizes)" [ "$shrank" = yes ]
out=$("$client" verify "$port" "$work/hup.acked" 2>&1)
holds "every acknowledged write is there after the compaction" [ $? -eq 0 ]

# --- SIGTERM with clients connected and writing. ----------------------------------------
"$client" hold "$port" 20 30 > "$work/held" &
holder=$!
until_true 50 grep -qs holding "$work/held"
"$client" load "$port" 30 "$work/term.acked" &
loader=$!
sleep 1
kill -TERM "$pid"
finish "$pid"
holds "SIGTERM with clients connected exits 0" [ "$code" -eq 0 ]
has "... saying why" "$work/third.log" "SIGTERM: shutting down"
holds "... and removes the PID file" [ ! -e "$data/keystonelight.pid" ]
wait "$loader"
wait "$holder"
has "... and closes the 20 idle connections and the writer's" "$work/third.log" \
    "connections closed: 21"
start fourth --dir "$data"
out=$("$client" verify "$port" "$work/term.acked" 2>&1)
holds "every write acknowledged before SIGTERM is there after a restart" [ $? -eq 0 ]

# --- A client that vanishes with replies unread, then SHUTDOWN. -------------------------
"$client" greedy "$port"
out=$("$client" "$port" PING)
holds "a client gone mid-reply leaves the server serving (no SIGPIPE death)" [ "$out" = "PONG" ]
"$client" "$port" SHUTDOWN > /dev/null 2>&1
finish "$pid"
holds "SHUTDOWN exits 0" [ "$code" -eq 0 ]
has "... saying why" "$work/fourth.log" "SHUTDOWN from a client: shutting down"
holds "... and removes the PID file" [ ! -e "$data/keystonelight.pid" ]

# --- A port in use: exit 1, naming the port. --------------------------------------------
start fifth --dir "$work/other"
"$server" --port "$port" --dir "$work/another" > "$work/busy.log" 2>&1; code=$?
holds "a port in use makes the server exit 1" [ "$code" -eq 1 ]
has "... naming the address and the flag" "$work/busy.log" "127.0.0.1:$port"
kill -TERM "$pid"
finish "$pid"

# --- A stale PID file naming a live process that is not a server: taken over, truly told.
printf '%s\n' "$$" > "$work/live.pid"  # this shell: alive, and holding no lock
start live --dir "$work/other" --pidfile "$work/live.pid"
holds "a PID file naming a live process, unlocked, is taken over" [ -n "$port" ]
has "... saying no process holds its lock" "$work/live.log" \
    "held pid $$, but no process holds its lock, so no server is using it: taken over"
if grep -q "no longer running" "$work/live.log"; then
  out=$(cat "$work/live.log"); not_ok "... without claiming pid $$ is no longer running"
else
  ok
fi
kill -TERM "$pid"
finish "$pid"

# --- --pidfile aimed at something that is not a PID file: refused, nothing touched. ----
# The data directory, its log, its lock, and a file of someone else's: exit 1, each named,
# and each byte left as it was (the log used to be truncated, then deleted at exit).
printf 'notes, not a pid\n' > "$work/notes"
before=$(cat "$data/keystonelight.log" "$data/LOCK" "$work/notes" | cksum)
for case in "$data/keystonelight.log|is the store's log" "$data/LOCK|is the data directory's lock file" \
            "$data|is the data directory" "$work/notes|holds something other than a process id"; do
  target=${case%%|*} want=${case#*|}
  "$server" --port 0 --dir "$data" --pidfile "$target" > "$work/wrong-pidfile.log" 2>&1 &
  pids="$pids $!"
  finish $!
  holds "--pidfile $target exits 1 (exit $code)" [ "$code" -eq 1 ]
  has "... saying what it is" "$work/wrong-pidfile.log" "$want"
  has "... and that nothing was changed" "$work/wrong-pidfile.log" "nothing was changed"
done
holds "... and the log, the lock and the notes are byte for byte as they were" \
    [ "$(cat "$data/keystonelight.log" "$data/LOCK" "$work/notes" | cksum)" = "$before" ]
start after-wrong-pidfile --dir "$data"
holds "... and the store opens afterwards" [ -n "$port" ]
has "... with its keys" "$work/after-wrong-pidfile.log" "keys loaded from"
kill -TERM "$pid"
finish "$pid"

# --- SIGTERM during a long replay: stops at once, exit 0, the log untouched. ------------
# Two million records take about two seconds to replay here. The signal goes as soon as
# the PID file exists (it is taken just before the store opens), so it lands in the replay.
mkdir "$work/big"
if "$work/biglog" "$work/big" 2000000; then
  before=$(cksum < "$work/big/keystonelight.log")
  "$server" --port 0 --dir "$work/big" > "$work/big.log" 2>&1 &
  pid=$!
  pids="$pids $pid"
  until_true 100 test -s "$work/big/keystonelight.pid"
  kill -TERM "$pid"
  if until_true 15 sh -c "! kill -0 $pid 2>/dev/null"; then
    wait "$pid"; code=$?
    holds "SIGTERM during the replay stops the server within 1.5 s, exit 0 (exit $code)" \
        [ "$code" -eq 0 ]
  else
    finish "$pid"
    out=$(cat "$work/big.log"); not_ok "SIGTERM during the replay stops the server within 1.5 s (exit $code)"
  fi
  has "... stopping the replay" "$work/big.log" "stopped while loading the log"
  if grep -q "ready for connections" "$work/big.log"; then
    out=$(cat "$work/big.log"); not_ok "... before listening"
  else
    ok
  fi
  holds "... removes the PID file" [ ! -e "$work/big/keystonelight.pid" ]
  holds "... and leaves the log byte for byte as it was" \
      [ "$(cksum < "$work/big/keystonelight.log")" = "$before" ]
  start big-again --dir "$work/big"
  has "... and all of it loads afterwards" "$work/big-again.log" "2000000 keys loaded"
  [ -n "$port" ] && "$client" "$port" SHUTDOWN > /dev/null 2>&1
  finish "$pid"
else
  out=''; not_ok "the generator writes a log of two million records"
fi
rm -rf "$work/big"

# --- make run in a fresh copy: the defaults, 127.0.0.1:6380 and ./data. -----------------
fresh=$work/fresh
mkdir -p "$fresh"
cp -R Makefile keystonelight.hpp examples tools chapters "$fresh"/
"$client" 6380 PING > /dev/null 2>&1
if [ $? -ne 3 ]; then  # something answers there
  echo "note: port 6380 is taken on this machine, so 'make run' on its defaults was not tried"
else
  (cd "$fresh" && exec make -s run) > "$work/run.log" 2>&1 &
  maker=$!
  pids="$pids $maker"
  if until_true 600 grep -q 'ready for connections' "$work/run.log"; then
    ok
    has "make run listens on 127.0.0.1:6380" "$work/run.log" "listening on 127.0.0.1:6380"
    has "make run keeps the data in ./data" "$work/run.log" "data directory ./data"
    out=$("$client" 6380 SHUTDOWN 2>&1)  # only now: the server on 6380 is ours
    finish "$maker"
    holds "make run's server stops on SHUTDOWN" [ "$code" -eq 0 ]
    holds "make run made ./data" [ -f "$fresh/data/keystonelight.log" ]
  else
    out=$(cat "$work/run.log"); not_ok "make run starts the server"
  fi
fi

summary
