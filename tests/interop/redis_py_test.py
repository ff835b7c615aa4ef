#!/usr/bin/python3
"""redis-py, the Python client most Redis users have, against a server at 127.0.0.1:PORT.

    /usr/bin/python3 tests/interop/redis_py_test.py [--host ADDR] [--flush] PORT

It checks what a Python program relies on: strings with expiry (SET's options, SETEX,
PSETEX, GETEX, the EXPIRE family with NX/XX/GT/LT, TTL/PTTL/EXPIRETIME, PERSIST, and a key
really gone once its time is up), pipelines run as transactions, WATCH with a second
connection's write in between (WatchError) and without, the transaction() helper, MULTI
and DISCARD by hand, SCAN through scan_iter over thousands of keys, and the string and
keyspace commands (INCRBYFLOAT, GETRANGE, SETRANGE, GETDEL, GETSET, MSETNX, RENAME, COPY,
TYPE, UNLINK, TOUCH ...). It prints TAP and exits 1 if a check failed.

It writes keys of its own and leaves them there: give it a scratch server. It refuses a
database 0 that holds keys unless --flush says to empty it first. It needs redis-py
(Debian's python3-redis, for /usr/bin/python3) and nothing else beyond the standard library.
"""

import datetime
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ for tap.py in the work tree
from tap import Failure, Suite, expect, expect_between, expect_error, expect_true

try:
    import redis
    from redis.exceptions import ResponseError, WatchError
except ImportError:
    print("Bail out! redis-py is missing: apt-get install python3-redis, and run this with "
          "/usr/bin/python3")
    sys.exit(2)

suite = Suite(__doc__.splitlines()[0])
args = None
r = None      # the connection the checks use
other = None  # a second client with its own connections: the "someone else" of WATCH


def connect(**options):
    return redis.Redis(host=args.host, port=args.port, socket_timeout=10,
                       socket_connect_timeout=5, **options)


def now():
    return int(time.time())


# --- Strings with expiry ---------------------------------------------------------------

@suite.check("SET EX sets the value and a TTL in seconds")
def _():
    expect(r.set("exp:ex", "v", ex=100), True, "SET EX 100")
    expect(r.get("exp:ex"), b"v", "GET")
    expect_between(r.ttl("exp:ex"), 99, 100, "TTL")
    expect_between(r.pttl("exp:ex"), 98_000, 100_000, "PTTL")


@suite.check("SET PX sets a TTL in milliseconds")
def _():
    expect(r.set("exp:px", "v", px=50_000), True, "SET PX 50000")
    expect_between(r.pttl("exp:px"), 48_000, 50_000, "PTTL")
    expect_between(r.ttl("exp:px"), 49, 50, "TTL")


@suite.check("SET EXAT and PXAT set an absolute expiry")
def _():
    at = now() + 100
    expect(r.set("exp:exat", "v", exat=at), True, "SET EXAT")
    expect(r.expiretime("exp:exat"), at, "EXPIRETIME after SET EXAT")
    at_ms = at * 1000 + 123
    expect(r.set("exp:pxat", "v", pxat=at_ms), True, "SET PXAT")
    expect(r.pexpiretime("exp:pxat"), at_ms, "PEXPIRETIME after SET PXAT")
    expect(r.set("exp:exat-dt", "v", exat=datetime.datetime.fromtimestamp(at)), True,
           "SET EXAT with a datetime")
    expect(r.expiretime("exp:exat-dt"), at, "EXPIRETIME after SET EXAT (datetime)")


@suite.check("SET NX writes only a missing key")
def _():
    expect(r.set("exp:nx", "first", nx=True), True, "SET NX on a missing key")
    expect(r.set("exp:nx", "second", nx=True), None, "SET NX on an existing key")
    expect(r.get("exp:nx"), b"first", "the value after the refused SET NX")
    expect(r.set("exp:nx-ex", "v", nx=True, ex=100), True, "SET NX EX")
    expect_between(r.ttl("exp:nx-ex"), 99, 100, "TTL after SET NX EX")


@suite.check("SET XX writes only an existing key")
def _():
    expect(r.set("exp:xx", "v", xx=True), None, "SET XX on a missing key")
    expect(r.exists("exp:xx"), 0, "EXISTS after the refused SET XX")
    r.set("exp:xx", "first")
    expect(r.set("exp:xx", "second", xx=True), True, "SET XX on an existing key")
    expect(r.get("exp:xx"), b"second", "the value after SET XX")
    expect(r.set("exp:xx", "third", xx=True, px=100_000), True, "SET XX PX on an existing key")
    expect_between(r.ttl("exp:xx"), 99, 100, "TTL after SET XX PX")


@suite.check("SET KEEPTTL keeps the TTL; a plain SET removes it")
def _():
    r.set("exp:keepttl", "a", ex=100)
    expect(r.set("exp:keepttl", "b", keepttl=True), True, "SET KEEPTTL")
    expect(r.get("exp:keepttl"), b"b", "the value after SET KEEPTTL")
    expect_between(r.ttl("exp:keepttl"), 99, 100, "TTL after SET KEEPTTL")
    r.set("exp:keepttl", "c")
    expect(r.ttl("exp:keepttl"), -1, "TTL after a plain SET")


@suite.check("SET GET returns the old value, with NX, XX and EX too")
def _():
    expect(r.set("exp:get", "one", get=True), None, "SET GET on a missing key")
    expect(r.set("exp:get", "two", get=True), b"one", "SET GET on an existing key")
    expect(r.set("exp:get", "three", get=True, xx=True), b"two", "SET XX GET")
    expect(r.get("exp:get"), b"three", "the value after SET XX GET")
    # Redis 7.0 allows NX with GET: the old value comes back and nothing is written.
    expect(r.set("exp:get", "four", get=True, nx=True), b"three", "SET NX GET on an existing key")
    expect(r.get("exp:get"), b"three", "the value after SET NX GET")
    expect(r.set("exp:get", "five", get=True, ex=100), b"three", "SET GET EX")
    expect_between(r.ttl("exp:get"), 99, 100, "TTL after SET GET EX")


@suite.check("SET refuses a zero or negative expiry and two expiry options")
def _():
    expect_error(lambda: r.set("exp:bad", "v", ex=0), ResponseError, "invalid expire time",
                 "SET EX 0")
    expect_error(lambda: r.set("exp:bad", "v", px=-5), ResponseError, "invalid expire time",
                 "SET PX -5")
    expect_error(lambda: r.execute_command("SET", "exp:bad", "v", "EX", 10, "PX", 10000),
                 ResponseError, "syntax error", "SET EX PX")
    expect_error(lambda: r.execute_command("SET", "exp:bad", "v", "EX", "ten"),
                 ResponseError, "not an integer", "SET EX ten")
    expect(r.exists("exp:bad"), 0, "EXISTS after the refused SETs")


@suite.check("SETEX and PSETEX set a value with a TTL")
def _():
    expect(r.setex("exp:setex", 100, "v"), True, "SETEX")
    expect(r.get("exp:setex"), b"v", "GET after SETEX")
    expect_between(r.ttl("exp:setex"), 99, 100, "TTL after SETEX")
    expect(r.psetex("exp:psetex", 50_000, "v"), True, "PSETEX")
    expect_between(r.pttl("exp:psetex"), 48_000, 50_000, "PTTL after PSETEX")
    expect(r.setex("exp:setex-td", datetime.timedelta(seconds=30), "v"), True,
           "SETEX with a timedelta")
    expect_between(r.ttl("exp:setex-td"), 29, 30, "TTL after SETEX (timedelta)")
    expect_error(lambda: r.setex("exp:setex0", 0, "v"), ResponseError, "invalid expire time",
                 "SETEX 0")


@suite.check("GETEX reads and changes the TTL: EX, PX, EXAT, PXAT, PERSIST, none")
def _():
    r.set("exp:getex", "v")
    expect(r.getex("exp:getex"), b"v", "GETEX without an option")
    expect(r.ttl("exp:getex"), -1, "TTL after GETEX without an option")
    expect(r.getex("exp:getex", ex=100), b"v", "GETEX EX")
    expect_between(r.ttl("exp:getex"), 99, 100, "TTL after GETEX EX")
    expect(r.getex("exp:getex", px=50_000), b"v", "GETEX PX")
    expect_between(r.pttl("exp:getex"), 48_000, 50_000, "PTTL after GETEX PX")
    at = now() + 200
    expect(r.getex("exp:getex", exat=at), b"v", "GETEX EXAT")
    expect(r.expiretime("exp:getex"), at, "EXPIRETIME after GETEX EXAT")
    expect(r.getex("exp:getex", pxat=at * 1000 + 7), b"v", "GETEX PXAT")
    expect(r.pexpiretime("exp:getex"), at * 1000 + 7, "PEXPIRETIME after GETEX PXAT")
    expect(r.getex("exp:getex", persist=True), b"v", "GETEX PERSIST")
    expect(r.ttl("exp:getex"), -1, "TTL after GETEX PERSIST")
    expect(r.getex("exp:getex-missing", ex=10), None, "GETEX on a missing key")
    expect(r.exists("exp:getex-missing"), 0, "GETEX EX does not create the key")


@suite.check("EXPIRE and PEXPIRE set a TTL on an existing key only")
def _():
    r.set("exp:expire", "v")
    expect(r.expire("exp:expire", 100), True, "EXPIRE 100")
    expect_between(r.ttl("exp:expire"), 99, 100, "TTL after EXPIRE")
    expect(r.pexpire("exp:expire", 50_000), True, "PEXPIRE 50000")
    expect_between(r.pttl("exp:expire"), 48_000, 50_000, "PTTL after PEXPIRE")
    expect(r.expire("exp:expire", datetime.timedelta(seconds=30)), True, "EXPIRE timedelta")
    expect_between(r.ttl("exp:expire"), 29, 30, "TTL after EXPIRE (timedelta)")
    expect(r.expire("exp:expire-missing", 100), False, "EXPIRE on a missing key")
    expect(r.pexpire("exp:expire-missing", 100), False, "PEXPIRE on a missing key")
    expect(r.exists("exp:expire-missing"), 0, "EXPIRE does not create the key")


@suite.check("EXPIRE with a zero or negative time deletes the key")
def _():
    r.set("exp:expire0", "v")
    expect(r.expire("exp:expire0", 0), True, "EXPIRE 0")
    expect(r.exists("exp:expire0"), 0, "EXISTS after EXPIRE 0")
    r.set("exp:expire-neg", "v")
    expect(r.pexpire("exp:expire-neg", -1000), True, "PEXPIRE -1000")
    expect(r.get("exp:expire-neg"), None, "GET after PEXPIRE -1000")


@suite.check("EXPIRE NX and XX: only without, only with a TTL")
def _():
    r.set("exp:nxxx", "v")
    expect(r.expire("exp:nxxx", 100, xx=True), False, "EXPIRE XX without a TTL")
    expect(r.ttl("exp:nxxx"), -1, "TTL after the refused EXPIRE XX")
    expect(r.expire("exp:nxxx", 100, nx=True), True, "EXPIRE NX without a TTL")
    expect(r.expire("exp:nxxx", 200, nx=True), False, "EXPIRE NX with a TTL")
    expect_between(r.ttl("exp:nxxx"), 99, 100, "TTL after the refused EXPIRE NX")
    expect(r.expire("exp:nxxx", 200, xx=True), True, "EXPIRE XX with a TTL")
    expect_between(r.ttl("exp:nxxx"), 199, 200, "TTL after EXPIRE XX")
    expect(r.pexpire("exp:nxxx", 50_000, xx=True), True, "PEXPIRE XX with a TTL")
    expect_between(r.pttl("exp:nxxx"), 48_000, 50_000, "PTTL after PEXPIRE XX")


@suite.check("EXPIRE GT and LT compare with the current TTL (none counts as infinite)")
def _():
    r.set("exp:gtlt", "v")
    expect(r.expire("exp:gtlt", 100, gt=True), False, "EXPIRE GT without a TTL")
    expect(r.ttl("exp:gtlt"), -1, "TTL after the refused EXPIRE GT")
    expect(r.expire("exp:gtlt", 100, lt=True), True, "EXPIRE LT without a TTL")
    expect(r.expire("exp:gtlt", 200, gt=True), True, "EXPIRE GT 200 over 100")
    expect(r.expire("exp:gtlt", 150, gt=True), False, "EXPIRE GT 150 under 200")
    expect_between(r.ttl("exp:gtlt"), 199, 200, "TTL after the GTs")
    expect(r.expire("exp:gtlt", 300, lt=True), False, "EXPIRE LT 300 over 200")
    expect(r.expire("exp:gtlt", 50, lt=True), True, "EXPIRE LT 50 under 200")
    expect_between(r.ttl("exp:gtlt"), 49, 50, "TTL after the LTs")
    expect(r.pexpire("exp:gtlt", 60_000, gt=True), True, "PEXPIRE GT")
    expect_between(r.pttl("exp:gtlt"), 58_000, 60_000, "PTTL after PEXPIRE GT")


@suite.check("EXPIRE refuses NX with XX, GT with LT, and a non-integer")
def _():
    r.set("exp:badopt", "v")
    expect_error(lambda: r.expire("exp:badopt", 100, nx=True, xx=True), ResponseError,
                 "not compatible", "EXPIRE NX XX")
    expect_error(lambda: r.expire("exp:badopt", 100, gt=True, lt=True), ResponseError,
                 "not compatible", "EXPIRE GT LT")
    expect_error(lambda: r.expire("exp:badopt", 100, nx=True, gt=True), ResponseError,
                 "not compatible", "EXPIRE NX GT")
    expect_error(lambda: r.execute_command("EXPIRE", "exp:badopt", "soon"), ResponseError,
                 "not an integer", "EXPIRE soon")
    expect_error(lambda: r.execute_command("EXPIRE", "exp:badopt", 100, "SOMETIME"),
                 ResponseError, "unsupported option", "EXPIRE 100 SOMETIME")
    expect(r.ttl("exp:badopt"), -1, "TTL after the refused EXPIREs")


@suite.check("EXPIREAT and PEXPIREAT, with integers and datetimes, NX/XX/GT/LT")
def _():
    r.set("exp:at", "v")
    at = now() + 100
    expect(r.expireat("exp:at", at), True, "EXPIREAT")
    expect(r.expiretime("exp:at"), at, "EXPIRETIME after EXPIREAT")
    expect_between(r.ttl("exp:at"), 98, 100, "TTL after EXPIREAT")
    expect(r.pexpireat("exp:at", at * 1000 + 500), True, "PEXPIREAT")
    expect(r.pexpiretime("exp:at"), at * 1000 + 500, "PEXPIRETIME after PEXPIREAT")
    expect(r.expireat("exp:at", datetime.datetime.fromtimestamp(at + 50)), True,
           "EXPIREAT with a datetime")
    expect(r.expiretime("exp:at"), at + 50, "EXPIRETIME after EXPIREAT (datetime)")
    expect(r.expireat("exp:at", at + 10, gt=True), False, "EXPIREAT GT earlier")
    expect(r.expireat("exp:at", at + 10, lt=True), True, "EXPIREAT LT earlier")
    expect(r.expireat("exp:at", at + 500, nx=True), False, "EXPIREAT NX with a TTL")
    expect(r.pexpireat("exp:at", (at + 20) * 1000, xx=True), True, "PEXPIREAT XX with a TTL")
    expect(r.expiretime("exp:at"), at + 20, "EXPIRETIME after PEXPIREAT XX")
    expect(r.expireat("exp:at-missing", at), False, "EXPIREAT on a missing key")


@suite.check("EXPIREAT in the past deletes the key")
def _():
    r.set("exp:past", "v")
    expect(r.expireat("exp:past", now() - 10), True, "EXPIREAT 10 s ago")
    expect(r.exists("exp:past"), 0, "EXISTS after EXPIREAT in the past")
    r.set("exp:past-ms", "v")
    expect(r.pexpireat("exp:past-ms", 1000), True, "PEXPIREAT 1000 (1970)")
    expect(r.get("exp:past-ms"), None, "GET after PEXPIREAT in 1970")


@suite.check("TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for a missing key, -1 without a TTL")
def _():
    r.set("exp:nottl", "v")
    for name, call in (("TTL", r.ttl), ("PTTL", r.pttl), ("EXPIRETIME", r.expiretime),
                       ("PEXPIRETIME", r.pexpiretime)):
        expect(call("exp:nottl"), -1, f"{name} of a key without a TTL")
        expect(call("exp:missing"), -2, f"{name} of a missing key")
    r.set("exp:withttl", "v", px=100_000)
    expect_between(r.expiretime("exp:withttl"), now() + 98, now() + 101, "EXPIRETIME")
    expect_between(r.pexpiretime("exp:withttl"), time.time() * 1000 + 98_000,
                   time.time() * 1000 + 100_001, "PEXPIRETIME")


@suite.check("PERSIST removes a TTL, and says whether there was one")
def _():
    r.set("exp:persist", "v", ex=100)
    expect(r.persist("exp:persist"), True, "PERSIST with a TTL")
    expect(r.ttl("exp:persist"), -1, "TTL after PERSIST")
    expect(r.get("exp:persist"), b"v", "GET after PERSIST")
    expect(r.persist("exp:persist"), False, "PERSIST without a TTL")
    expect(r.persist("exp:persist-missing"), False, "PERSIST on a missing key")


@suite.check("a key set with PX 300 is gone after 600 ms: GET, EXISTS, TTL, KEYS, SCAN")
def _():
    r.set("exp:short", "v", px=300)
    r.set("exp:short-ex", "v", ex=100)
    r.psetex("exp:short-psetex", 300, "v")
    r.set("exp:short-pexpire", "v")
    r.pexpire("exp:short-pexpire", 300)
    expect(r.get("exp:short"), b"v", "GET at once")
    time.sleep(0.6)
    for key in ("exp:short", "exp:short-psetex", "exp:short-pexpire"):
        expect(r.get(key), None, f"GET {key} after 600 ms")
        expect(r.exists(key), 0, f"EXISTS {key} after 600 ms")
        expect(r.ttl(key), -2, f"TTL {key} after 600 ms")
    expect(sorted(r.keys("exp:short*")), [b"exp:short-ex"], "KEYS exp:short* after 600 ms")
    expect(sorted(r.scan_iter(match="exp:short*")), [b"exp:short-ex"],
           "SCAN MATCH exp:short* after 600 ms")
    expect(r.set("exp:short", "new", nx=True), True, "SET NX on the expired key")


@suite.check("writes that keep a TTL (INCR, APPEND, SETRANGE, RENAME) and that drop it (SET, GETSET)")
def _():
    r.set("exp:keep", "10", ex=100)
    r.incr("exp:keep")
    expect_between(r.ttl("exp:keep"), 99, 100, "TTL after INCR")
    r.append("exp:keep", "0")
    expect_between(r.ttl("exp:keep"), 99, 100, "TTL after APPEND")
    r.setrange("exp:keep", 0, "2")
    expect_between(r.ttl("exp:keep"), 99, 100, "TTL after SETRANGE")
    r.incrbyfloat("exp:keep", 1.5)
    expect_between(r.ttl("exp:keep"), 99, 100, "TTL after INCRBYFLOAT")
    r.rename("exp:keep", "exp:keep2")
    expect_between(r.ttl("exp:keep2"), 99, 100, "TTL after RENAME")
    r.getset("exp:keep2", "x")
    expect(r.ttl("exp:keep2"), -1, "TTL after GETSET")
    r.set("exp:keep3", "x", ex=100)
    r.set("exp:keep3", "y")
    expect(r.ttl("exp:keep3"), -1, "TTL after SET")


# --- Transactions --------------------------------------------------------------------

@suite.check("pipeline(transaction=True): MULTI/EXEC returns each command's reply")
def _():
    r.delete("tx:a", "tx:n")
    with r.pipeline(transaction=True) as pipe:
        pipe.set("tx:a", "1", ex=100).incr("tx:n").incrby("tx:n", 5).get("tx:a").ttl("tx:a")
        replies = pipe.execute()
    expect(replies[:4], [True, 1, 6, b"1"], "the replies of SET, INCR, INCRBY, GET")
    expect_between(replies[4], 99, 100, "the reply of TTL")
    expect(r.get("tx:n"), b"6", "the counter after EXEC")


@suite.check("pipeline(transaction=False) sends no MULTI and gives the same replies")
def _():
    r.delete("tx:plain")
    with r.pipeline(transaction=False) as pipe:
        pipe.set("tx:plain", "a").append("tx:plain", "b").get("tx:plain").delete("tx:plain")
        expect(pipe.execute(), [True, 2, b"ab", 1], "the replies")


@suite.check("a command failing inside EXEC fails alone; the others run (no rollback)")
def _():
    r.set("tx:text", "not a number")
    r.delete("tx:after")
    with r.pipeline(transaction=True) as pipe:
        pipe.set("tx:before", "b").incr("tx:text").set("tx:after", "a")
        replies = pipe.execute(raise_on_error=False)
    expect(len(replies), 3, "the number of replies")
    expect(replies[0], True, "the SET before")
    expect_true(isinstance(replies[1], ResponseError) and "not an integer" in str(replies[1]),
                f"INCR of text should be an error reply, got {replies[1]!r}")
    expect(replies[2], True, "the SET after")
    expect(r.get("tx:after"), b"a", "the value the SET after wrote")
    with r.pipeline(transaction=True) as pipe:
        pipe.incr("tx:text")
        expect_error(pipe.execute, ResponseError, "not an integer", "execute() raising")


@suite.check("a command refused while queued (wrong arity) aborts the whole EXEC")
def _():
    r.delete("tx:abort1", "tx:abort2")
    with r.pipeline(transaction=True) as pipe:
        pipe.set("tx:abort1", "x")
        pipe.execute_command("SET", "tx:abort-arity")
        pipe.set("tx:abort2", "x")
        expect_error(pipe.execute, ResponseError, "wrong number of arguments", "execute()")
    expect(r.exists("tx:abort1", "tx:abort2"), 0, "keys written by the aborted transaction")


@suite.check("an unknown command while queued aborts the whole EXEC")
def _():
    r.delete("tx:unknown")
    with r.pipeline(transaction=True) as pipe:
        pipe.set("tx:unknown", "x")
        pipe.execute_command("NOSUCHCOMMAND", "a")
        expect_error(pipe.execute, ResponseError, "unknown command", "execute()")
    expect(r.exists("tx:unknown"), 0, "the key written by the aborted transaction")


def watch_then_write(key, interfere):
    """WATCH key, read it, let interfere() run on the second connection, then MULTI, SET
    key, EXEC. Returns what execute() returned, or raises what it raised."""
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        pipe.get(key)  # immediate mode: a real read on the watching connection
        interfere()
        pipe.multi()
        pipe.set(key, "mine")
        return pipe.execute()


@suite.check("WATCH: EXEC succeeds when nobody touched the key (reads by others are fine)")
def _():
    r.set("tx:watch-ok", "start")
    expect(watch_then_write("tx:watch-ok", lambda: other.get("tx:watch-ok")), [True],
           "execute()")
    expect(r.get("tx:watch-ok"), b"mine", "the value after EXEC")


@suite.check("WATCH: another connection's SET makes EXEC fail (WatchError), nothing written")
def _():
    r.set("tx:watch-set", "start")
    expect_error(lambda: watch_then_write("tx:watch-set", lambda: other.set("tx:watch-set", "theirs")),
                 WatchError, "", "execute()")
    expect(r.get("tx:watch-set"), b"theirs", "the value after the failed EXEC")


@suite.check("WATCH: another connection's INCR, DEL, EXPIRE each make EXEC fail")
def _():
    for what, interfere in (("INCR", lambda k: other.incr(k)), ("DEL", lambda k: other.delete(k)),
                            ("EXPIRE", lambda k: other.expire(k, 100))):
        key = f"tx:watch-{what.lower()}"
        r.set(key, "1")
        try:
            watch_then_write(key, lambda: interfere(key))
        except WatchError:
            continue
        raise Failure(f"EXEC ran after another connection's {what} of the watched key")


@suite.check("WATCH of a missing key: another connection creating it makes EXEC fail")
def _():
    r.delete("tx:watch-new")
    expect_error(lambda: watch_then_write("tx:watch-new", lambda: other.set("tx:watch-new", "theirs")),
                 WatchError, "", "execute()")
    expect(r.get("tx:watch-new"), b"theirs", "the value after the failed EXEC")


@suite.check("WATCH: a write by the watching connection itself before MULTI makes EXEC fail")
def _():
    r.set("tx:watch-self", "start")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("tx:watch-self")
        pipe.set("tx:watch-self", "own")  # immediate mode, on the watching connection
        pipe.multi()
        pipe.set("tx:watch-self", "mine")
        expect_error(pipe.execute, WatchError, "", "execute()")
    expect(r.get("tx:watch-self"), b"own", "the value after the failed EXEC")


@suite.check("UNWATCH forgets the watched keys: EXEC succeeds after a conflicting write")
def _():
    r.set("tx:unwatch", "start")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("tx:unwatch")
        pipe.unwatch()
        other.set("tx:unwatch", "theirs")
        pipe.multi()
        pipe.set("tx:unwatch", "mine")
        expect(pipe.execute(), [True], "execute()")
    expect(r.get("tx:unwatch"), b"mine", "the value after EXEC")


@suite.check("a failed EXEC clears the watch: the retry on the same connection succeeds")
def _():
    r.set("tx:retry", "0")
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("tx:retry")
        other.set("tx:retry", "1")
        pipe.multi()
        pipe.set("tx:retry", "2")
        expect_error(pipe.execute, WatchError, "", "the first execute()")
        pipe.multi()  # no WATCH this time, on the same connection
        pipe.set("tx:retry", "3")
        expect(pipe.execute(), [True], "the second execute()")
    expect(r.get("tx:retry"), b"3", "the value after the retry")


@suite.check("transaction() retries its function after a conflict, and then succeeds")
def _():
    r.set("tx:helper", "5")
    calls = []

    def add_ten(pipe):
        calls.append(1)
        value = int(pipe.get("tx:helper"))
        if len(calls) == 1:
            other.incr("tx:helper")  # the conflict, on the first attempt only
        pipe.multi()
        pipe.set("tx:helper", value + 10)

    expect(r.transaction(add_ten, "tx:helper"), [True], "transaction()")
    expect(len(calls), 2, "calls of the function")
    expect(r.get("tx:helper"), b"16", "the value (5, +1 by the other, +10)")
    result = r.transaction(lambda pipe: pipe.get("tx:helper"), "tx:helper",
                           value_from_callable=True)
    expect(result, b"16", "transaction(value_from_callable=True)")


@suite.check("MULTI and DISCARD by hand: queued commands are dropped")
def _():
    single = connect(single_connection_client=True)
    try:
        r.delete("tx:discard")
        expect(single.execute_command("MULTI"), b"OK", "MULTI")
        expect(single.execute_command("GET", "tx:discard"), b"QUEUED", "GET inside MULTI")
        single.execute_command("SET", "tx:discard", "x")
        expect(single.execute_command("DISCARD"), b"OK", "DISCARD")
        expect(r.exists("tx:discard"), 0, "the key after DISCARD")
        expect(single.execute_command("GET", "tx:discard"), None, "GET after DISCARD")
    finally:
        single.close()


@suite.check("MULTI by hand: EXEC and DISCARD without MULTI, nested MULTI, WATCH inside MULTI")
def _():
    single = connect(single_connection_client=True)
    try:
        expect_error(lambda: single.execute_command("EXEC"), ResponseError, "EXEC without MULTI",
                     "EXEC alone")
        expect_error(lambda: single.execute_command("DISCARD"), ResponseError,
                     "DISCARD without MULTI", "DISCARD alone")
        single.execute_command("MULTI")
        expect_error(lambda: single.execute_command("MULTI"), ResponseError, "can not be nested",
                     "MULTI inside MULTI")
        expect_error(lambda: single.execute_command("WATCH", "tx:x"), ResponseError,
                     "inside MULTI is not allowed", "WATCH inside MULTI")
        single.execute_command("SET", "tx:nested", "1")
        expect(single.execute_command("EXEC"), [b"OK"], "EXEC after the refused MULTI and WATCH")
        expect(r.get("tx:nested"), b"1", "the value EXEC wrote")
    finally:
        single.close()


# --- SCAN ------------------------------------------------------------------------------

SCAN_KEYS = {f"scan:{i}".encode() for i in range(3000)}
OTHER_KEYS = {f"noscan:{i}".encode() for i in range(500)}


def fill_scan_keys():
    """Writes SCAN_KEYS and OTHER_KEYS (again: a check must not depend on another)."""
    keys = sorted(SCAN_KEYS | OTHER_KEYS)
    for start in range(0, len(keys), 500):
        r.mset({key: b"v" for key in keys[start:start + 500]})


@suite.check("scan_iter(match, count=100) over 3000 keys: every key seen, none invented")
def _():
    fill_scan_keys()
    seen = list(r.scan_iter(match="scan:*", count=100))
    expect_true(set(seen) <= SCAN_KEYS, f"keys not written: {sorted(set(seen) - SCAN_KEYS)[:5]}")
    missing = SCAN_KEYS - set(seen)
    expect_true(not missing, f"{len(missing)} keys never seen, such as {sorted(missing)[:5]}")
    if len(seen) != len(set(seen)):
        print(f"# SCAN returned {len(seen) - len(set(seen))} keys twice (SCAN allows it)")


@suite.check("scan_iter with a narrower pattern (scan:1?) and a class (scan:2[05]*)")
def _():
    fill_scan_keys()
    expect(set(r.scan_iter(match="scan:1?", count=50)), {f"scan:1{d}".encode() for d in range(10)},
           "MATCH scan:1?")
    want = {k for k in SCAN_KEYS if k.startswith(b"scan:20") or k.startswith(b"scan:25")}
    expect(set(r.scan_iter(match="scan:2[05]*", count=200)), want, "MATCH scan:2[05]*")
    expect(list(r.scan_iter(match="nothing:*", count=100)), [], "MATCH with no key")


@suite.check("scan_iter without a pattern yields exactly what KEYS * lists")
def _():
    fill_scan_keys()
    everything = set(r.keys("*"))
    expect_true(SCAN_KEYS | OTHER_KEYS <= everything, "KEYS * lacks keys this test wrote")
    seen = set(r.scan_iter(count=1000))
    expect(len(seen), len(everything), "the number of distinct keys SCAN saw")
    expect_true(seen == everything, f"SCAN and KEYS differ: {sorted(seen ^ everything)[:5]}")


@suite.check("SCAN COUNT 10 by hand: the cursor is used, the walk ends at cursor 0")
def _():
    fill_scan_keys()
    cursor, calls, seen, largest = 0, 0, set(), 0
    while True:
        cursor, keys = r.scan(cursor, match="scan:*", count=10)
        calls += 1
        largest = max(largest, len(keys))
        seen.update(keys)
        expect_true(isinstance(cursor, int), f"the cursor should be an integer, got {cursor!r}")
        if cursor == 0:
            break
        expect_true(calls < 100_000, "SCAN did not come back to cursor 0")
    expect(seen, SCAN_KEYS, "the keys seen")
    expect_true(calls > 1, "SCAN COUNT 10 returned all 3500 keys' matches in one call")
    print(f"# SCAN COUNT 10: {calls} calls, at most {largest} keys in one reply")


@suite.check("SCAN TYPE string finds the strings, TYPE hash finds nothing")
def _():
    fill_scan_keys()
    expect(set(r.scan_iter(match="scan:*", count=500, _type="string")), SCAN_KEYS, "TYPE string")
    expect(list(r.scan_iter(match="scan:*", count=500, _type="hash")), [], "TYPE hash")


@suite.check("SCAN while keys are added and deleted: every key present throughout is seen")
def _():
    stable = {f"mut:stable:{i}".encode() for i in range(2000)}
    churn = [f"mut:churn:{i}".encode() for i in range(2000)]
    r.mset({k: b"s" for k in stable})
    r.mset({k: b"c" for k in churn})
    cursor, seen, added, calls = 0, set(), [], 0
    while True:
        cursor, keys = r.scan(cursor, match="mut:*", count=50)
        seen.update(keys)
        calls += 1
        gone, churn = churn[:40], churn[40:]
        if gone:
            r.delete(*gone)
        fresh = [f"mut:new:{calls}:{i}".encode() for i in range(60)]
        r.mset({k: b"n" for k in fresh})
        added.extend(fresh)
        if cursor == 0 or calls > 100_000:
            break
    missing = stable - seen
    expect_true(not missing, f"{len(missing)} keys present throughout were not seen, "
                f"such as {sorted(missing)[:3]}")
    invented = {k for k in seen if not (k in stable or k.startswith(b"mut:churn:")
                                        or k.startswith(b"mut:new:"))}
    expect_true(not invented, f"keys never written: {sorted(invented)[:3]}")
    r.delete(*stable, *churn, *added)


@suite.check("SCAN refuses a cursor that is not a number")
def _():
    expect_error(lambda: r.execute_command("SCAN", "abc"), ResponseError, "invalid cursor",
                 "SCAN abc")


# --- Strings and the keyspace --------------------------------------------------------

@suite.check("INCR, INCRBY, DECR, DECRBY; errors for text and overflow")
def _():
    r.delete("str:n")
    expect(r.incr("str:n"), 1, "INCR of a missing key")
    expect(r.incr("str:n", 5), 6, "INCRBY 5")
    expect(r.decr("str:n"), 5, "DECR")
    expect(r.decr("str:n", 10), -5, "DECRBY 10")
    expect(r.get("str:n"), b"-5", "GET")
    r.set("str:text", "abc")
    expect_error(lambda: r.incr("str:text"), ResponseError, "not an integer", "INCR of text")
    r.set("str:max", str(2**63 - 1))
    expect_error(lambda: r.incr("str:max"), ResponseError, "overflow", "INCR past 2^63-1")


@suite.check("INCRBYFLOAT: the sum as Redis formats it, and errors")
def _():
    r.set("str:f", "10.50")
    expect(r.incrbyfloat("str:f", 0.1), 10.6, "INCRBYFLOAT 0.1")
    expect(r.get("str:f"), b"10.6", "GET after INCRBYFLOAT")
    expect(r.incrbyfloat("str:f", -5), 5.6, "INCRBYFLOAT -5")
    r.set("str:f", "5.0e3")
    expect(r.incrbyfloat("str:f", 2.0e2), 5200.0, "INCRBYFLOAT on 5.0e3")
    expect(r.get("str:f"), b"5200", "GET after INCRBYFLOAT on 5.0e3")
    r.delete("str:f-new")
    expect(r.incrbyfloat("str:f-new", 1.5), 1.5, "INCRBYFLOAT of a missing key")
    r.set("str:f-text", "abc")
    expect_error(lambda: r.incrbyfloat("str:f-text", 1), ResponseError, "not a valid float",
                 "INCRBYFLOAT of text")


@suite.check("GETRANGE with positive, negative and out-of-range offsets")
def _():
    r.set("str:range", "This is a string")
    expect(r.getrange("str:range", 0, 3), b"This", "GETRANGE 0 3")
    expect(r.getrange("str:range", -3, -1), b"ing", "GETRANGE -3 -1")
    expect(r.getrange("str:range", 0, -1), b"This is a string", "GETRANGE 0 -1")
    expect(r.getrange("str:range", 10, 100), b"string", "GETRANGE 10 100")
    expect(r.getrange("str:range", 5, 2), b"", "GETRANGE 5 2")
    expect(r.getrange("str:range-missing", 0, 10), b"", "GETRANGE of a missing key")


@suite.check("SETRANGE overwrites, pads a missing key with zero bytes, refuses offset -1")
def _():
    r.set("str:setrange", "Hello World")
    expect(r.setrange("str:setrange", 6, "Redis"), 11, "SETRANGE 6 Redis")
    expect(r.get("str:setrange"), b"Hello Redis", "GET after SETRANGE")
    expect(r.setrange("str:setrange", 11, "!!"), 13, "SETRANGE at the end")
    r.delete("str:setrange-new")
    expect(r.setrange("str:setrange-new", 5, "x"), 6, "SETRANGE 5 on a missing key")
    expect(r.get("str:setrange-new"), b"\x00\x00\x00\x00\x00x", "the padded value")
    expect_error(lambda: r.setrange("str:setrange", -1, "x"), ResponseError, "out of range",
                 "SETRANGE -1")


@suite.check("GETDEL returns the value and deletes the key")
def _():
    r.set("str:getdel", "v")
    expect(r.getdel("str:getdel"), b"v", "GETDEL")
    expect(r.exists("str:getdel"), 0, "EXISTS after GETDEL")
    expect(r.getdel("str:getdel"), None, "GETDEL of a missing key")


@suite.check("GETSET returns the old value (nil for a missing key)")
def _():
    r.delete("str:getset")
    expect(r.getset("str:getset", "one"), None, "GETSET of a missing key")
    expect(r.getset("str:getset", "two"), b"one", "GETSET")
    expect(r.get("str:getset"), b"two", "GET after GETSET")


@suite.check("MSET and MGET; MSETNX writes all or nothing")
def _():
    r.delete("str:m3")
    expect(r.mset({"str:m1": "a", "str:m2": "b"}), True, "MSET")
    expect(r.mget("str:m1", "str:m2", "str:m3"), [b"a", b"b", None], "MGET")
    expect(r.msetnx({"str:m3": "c", "str:m1": "z"}), False, "MSETNX with one existing key")
    expect(r.mget("str:m1", "str:m3"), [b"a", None], "the values after the refused MSETNX")
    expect(r.msetnx({"str:m3": "c", "str:m4": "d"}), True, "MSETNX of missing keys")
    expect(r.mget("str:m3", "str:m4"), [b"c", b"d"], "the values after MSETNX")
    r.delete("str:m4")


@suite.check("RENAME moves the value, RENAMENX refuses an existing target, a missing source errs")
def _():
    r.delete("str:ren-b", "str:ren-c")
    r.set("str:ren-a", "v")
    expect(r.rename("str:ren-a", "str:ren-b"), True, "RENAME")
    expect(r.mget("str:ren-a", "str:ren-b"), [None, b"v"], "the keys after RENAME")
    r.set("str:ren-c", "other")
    expect(r.renamenx("str:ren-b", "str:ren-c"), False, "RENAMENX onto an existing key")
    expect(r.renamenx("str:ren-b", "str:ren-d"), True, "RENAMENX onto a missing key")
    expect(r.rename("str:ren-d", "str:ren-c"), True, "RENAME onto an existing key")
    expect(r.get("str:ren-c"), b"v", "the overwritten target")
    expect(r.rename("str:ren-c", "str:ren-c"), True, "RENAME onto itself")
    expect_error(lambda: r.rename("str:ren-missing", "str:ren-x"), ResponseError, "no such key",
                 "RENAME of a missing key")


@suite.check("COPY copies value and TTL, refuses an existing target without REPLACE")
def _():
    r.delete("str:copy-b", "str:copy-c", "str:copy-ttl-b")
    r.set("str:copy-a", "v")
    expect(r.copy("str:copy-a", "str:copy-b"), True, "COPY")
    expect(r.mget("str:copy-a", "str:copy-b"), [b"v", b"v"], "both values after COPY")
    r.set("str:copy-c", "old")
    expect(r.copy("str:copy-a", "str:copy-c"), False, "COPY onto an existing key")
    expect(r.get("str:copy-c"), b"old", "the target after the refused COPY")
    expect(r.copy("str:copy-a", "str:copy-c", replace=True), True, "COPY REPLACE")
    expect(r.get("str:copy-c"), b"v", "the target after COPY REPLACE")
    expect(r.copy("str:copy-missing", "str:copy-d"), False, "COPY of a missing key")
    r.set("str:copy-ttl", "v", ex=100)
    expect(r.copy("str:copy-ttl", "str:copy-ttl-b"), True, "COPY of a key with a TTL")
    expect_between(r.ttl("str:copy-ttl-b"), 99, 100, "the copy's TTL")


@suite.check("TYPE: string, and none for a missing key")
def _():
    r.set("str:type", "v")
    expect(r.type("str:type"), b"string", "TYPE of a string")
    expect(r.type("str:type-missing"), b"none", "TYPE of a missing key")


@suite.check("UNLINK and TOUCH count the keys that exist; EXISTS counts repeats")
def _():
    r.mset({"str:u1": "a", "str:u2": "b"})
    r.delete("str:u3")
    expect(r.touch("str:u1", "str:u2", "str:u3"), 2, "TOUCH")
    expect(r.exists("str:u1", "str:u1", "str:u3"), 2, "EXISTS u1 u1 u3")
    expect(r.unlink("str:u1", "str:u2", "str:u3"), 2, "UNLINK")
    expect(r.exists("str:u1", "str:u2"), 0, "EXISTS after UNLINK")


@suite.check("RANDOMKEY returns a key that exists")
def _():
    r.set("str:random", "v")
    key = r.randomkey()
    expect_true(key is not None and r.exists(key) == 1, f"RANDOMKEY returned {key!r}")


@suite.check("STRLEN and APPEND; keys and values are binary-safe")
def _():
    key, value = b"str:bin\x00\r\n\xff", b"a\x00b\r\nc\xff"
    r.delete(key)
    expect(r.append(key, value), 7, "APPEND to a missing key")
    expect(r.append(key, b"!"), 8, "APPEND")
    expect(r.strlen(key), 8, "STRLEN")
    expect(r.get(key), value + b"!", "GET")
    expect(r.getrange(key, 1, 3), b"\x00b\r", "GETRANGE over the zero byte")
    expect(key in r.keys("str:bin*"), True, "KEYS finds the binary key")
    expect(r.strlen("str:strlen-missing"), 0, "STRLEN of a missing key")


def before():
    global r, other
    r = connect()
    other = connect()
    r.ping()
    if args.flush:
        r.flushdb()
    elif r.dbsize() != 0:
        raise RuntimeError(f"database 0 at {args.host}:{args.port} holds {r.dbsize()} keys; "
                           "this test writes keys of its own: give it an empty server, or "
                           "--flush to empty it")


if __name__ == "__main__":
    args = suite.arguments()
    sys.exit(suite.run(before))
