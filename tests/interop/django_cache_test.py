#!/usr/bin/python3
"""Django's cache through django-redis, against a server at 127.0.0.1:PORT.

    /usr/bin/python3 tests/interop/django_cache_test.py [--host ADDR] [--flush] PORT

Django is configured in this process (settings.configure, no project): the default cache
is django_redis.cache.RedisCache at redis://HOST:PORT/0. The checks are what a web
application does with its cache: set and get with timeouts (the default, None, 0, a
fraction of a second), add, get_many/set_many/delete_many, incr/decr, ttl/expire/persist/
touch, keys/iter_keys/delete_pattern, has_key, clear, get_or_set, versions. It prints TAP
and exits 1 if a check failed.

It clears the cache (FLUSHDB) as one of its checks: give it a scratch server. It refuses a
database 0 that holds keys unless --flush says to empty it first. It needs Django and
django-redis (Debian's python3-django-redis, for /usr/bin/python3).
"""

import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ for tap.py in the work tree
from tap import Skip, Suite, expect, expect_between, expect_error

try:
    import django
    from django.conf import settings
    import django_redis  # noqa: F401: only to say what is missing
    import redis
except ImportError as e:
    print(f"Bail out! {e}: apt-get install python3-django-redis, and run this with "
          "/usr/bin/python3")
    sys.exit(2)

suite = Suite(__doc__.splitlines()[0])
args = None
cache = None


@suite.check("set/get with the default timeout (300 s), and get's default")
def _():
    cache.set("plain", "value")
    expect(cache.get("plain"), "value", "get")
    expect_between(cache.ttl("plain"), 299, 300, "ttl")
    expect(cache.get("missing"), None, "get of a missing key")
    expect(cache.get("missing", "fallback"), "fallback", "get of a missing key with a default")


@suite.check("set with timeout=10, timeout=None (forever), and a float timeout")
def _():
    cache.set("ten", 1, timeout=10)
    expect_between(cache.ttl("ten"), 9, 10, "ttl after timeout=10")
    expect_between(cache.pttl("ten"), 9_000, 10_000, "pttl after timeout=10")
    cache.set("forever", 1, timeout=None)
    expect(cache.ttl("forever"), None, "ttl after timeout=None")
    expect(cache.get("forever"), 1, "get after timeout=None")
    cache.set("float", 1, timeout=2.5)
    expect_between(cache.pttl("float"), 2_000, 2_500, "pttl after timeout=2.5")


@suite.check("set with timeout=0 stores nothing and removes an existing value")
def _():
    cache.set("zero", "v", timeout=0)
    expect(cache.has_key("zero"), False, "has_key after set(timeout=0)")
    cache.set("zero", "v")
    cache.set("zero", "v2", timeout=0)
    expect(cache.get("zero"), None, "get after overwriting with timeout=0")
    cache.set("negative", "v")
    cache.set("negative", "v2", timeout=-1)
    expect(cache.get("negative"), None, "get after overwriting with timeout=-1")


@suite.check("a value set with timeout=0.3 is gone after 0.6 s")
def _():
    cache.set("short", "v", timeout=0.3)
    expect(cache.get("short"), "v", "get at once")
    time.sleep(0.6)
    expect(cache.get("short"), None, "get after 0.6 s")
    expect(cache.has_key("short"), False, "has_key after 0.6 s")
    expect(cache.ttl("short"), 0, "ttl after 0.6 s")
    expect(cache.add("short", "again"), True, "add after it expired")


@suite.check("values of every kind come back as they went in")
def _():
    values = {"str": "text é", "bytes": b"\x00\xff\r\n", "int": 42, "negative": -7,
              "big": 2**70, "float": 1.25, "bool": True, "none-like": [None],
              "dict": {"a": [1, 2], "b": {"c": None}}, "tuple": (1, "x"),
              "large": "x" * 200_000}
    for key, value in values.items():
        cache.set(f"kind:{key}", value)
    for key, value in values.items():
        expect(cache.get(f"kind:{key}"), value, f"the {key} value")


@suite.check("add writes a missing key only, with its timeout")
def _():
    expect(cache.add("added", "first", timeout=100), True, "add of a missing key")
    expect(cache.add("added", "second"), False, "add of an existing key")
    expect(cache.get("added"), "first", "the value after the refused add")
    expect_between(cache.ttl("added"), 99, 100, "ttl after add")
    expect(cache.add("added", "third", timeout=0), False, "add(timeout=0) of an existing key")
    expect(cache.get("added"), "first", "the value after add(timeout=0)")


@suite.check("set_many, get_many and delete_many")
def _():
    cache.set_many({"many:a": 1, "many:b": "two", "many:c": [3]}, timeout=50)
    expect(dict(cache.get_many(["many:a", "many:b", "many:c", "many:missing"])),
           {"many:a": 1, "many:b": "two", "many:c": [3]}, "get_many")
    expect_between(cache.ttl("many:b"), 49, 50, "ttl after set_many(timeout=50)")
    expect(dict(cache.get_many([])), {}, "get_many of no key")
    cache.delete_many(["many:a", "many:c", "many:missing"])
    expect(dict(cache.get_many(["many:a", "many:b", "many:c"])), {"many:b": "two"},
           "get_many after delete_many")
    expect(bool(cache.delete("many:b")), True, "delete of an existing key")
    expect(bool(cache.delete("many:b")), False, "delete of a missing key")


@suite.check("incr and decr: by one and by delta, keeping the timeout")
def _():
    cache.set("count", 10, timeout=100)
    expect(cache.incr("count"), 11, "incr")
    expect(cache.incr("count", 5), 16, "incr by 5")
    expect(cache.decr("count"), 15, "decr")
    expect(cache.decr("count", 20), -5, "decr by 20")
    expect(cache.get("count"), -5, "get")
    expect_between(cache.ttl("count"), 98, 100, "ttl after incr and decr")


@suite.check("incr of a missing key raises ValueError")
def _():
    # django-redis's incr is a Lua script (EVAL). A server without scripting makes it fall
    # back on EXISTS, TTL, GET and SET, which is not atomic and, for a missing key, raises
    # TypeError instead of ValueError: a django-redis bug that this check cannot get past.
    try:
        cache.client.get_client().execute_command("EVAL", "return 1", 0)
    except redis.exceptions.ResponseError as e:
        if "unknown command" in str(e):
            raise Skip("the server has no EVAL (scripting), which django-redis's incr uses")
        raise
    cache.delete("count-missing")
    expect_error(lambda: cache.incr("count-missing"), ValueError, "", "incr")
    expect_error(lambda: cache.decr("count-missing"), ValueError, "", "decr")
    expect(cache.has_key("count-missing"), False, "has_key after the failed incr")


@suite.check("ttl, expire, pexpire, persist, expire_at")
def _():
    cache.set("timed", "v", timeout=None)
    expect(cache.ttl("timed"), None, "ttl without a timeout")
    expect(cache.expire("timed", 20), True, "expire 20")
    expect_between(cache.ttl("timed"), 19, 20, "ttl after expire")
    expect(cache.pexpire("timed", 5_000), True, "pexpire 5000")
    expect_between(cache.pttl("timed"), 4_000, 5_000, "pttl after pexpire")
    expect(cache.persist("timed"), True, "persist")
    expect(cache.ttl("timed"), None, "ttl after persist")
    expect(cache.expire_at("timed", int(time.time()) + 30), True, "expire_at")
    expect_between(cache.ttl("timed"), 28, 30, "ttl after expire_at")
    expect(cache.ttl("timed-missing"), 0, "ttl of a missing key")


@suite.check("touch sets a new timeout, None makes it permanent; a missing key is False")
def _():
    cache.set("touched", "v", timeout=10)
    expect(cache.touch("touched", 60), True, "touch 60")
    expect_between(cache.ttl("touched"), 59, 60, "ttl after touch 60")
    expect(cache.touch("touched", None), True, "touch None")
    expect(cache.ttl("touched"), None, "ttl after touch None")
    expect(cache.touch("touched-missing", 60), False, "touch of a missing key")
    expect(cache.touch("touched"), True, "touch with the default timeout")
    expect_between(cache.ttl("touched"), 299, 300, "ttl after touch with the default")


@suite.check("keys, iter_keys and delete_pattern over 300 keys")
def _():
    names = {f"pattern:{i}" for i in range(300)}
    cache.set_many({name: i for i, name in enumerate(names)})
    cache.set("unpatterned", 1)
    expect(set(cache.keys("pattern:*")), names, "keys")
    expect(set(cache.iter_keys("pattern:*")), names, "iter_keys")
    expect(set(cache.iter_keys("pattern:1?")), {f"pattern:1{d}" for d in range(10)},
           "iter_keys pattern:1?")
    expect(cache.delete_pattern("pattern:*"), 300, "delete_pattern")
    expect(cache.keys("pattern:*"), [], "keys after delete_pattern")
    expect(cache.get("unpatterned"), 1, "a key outside the pattern")


@suite.check("has_key and the in operator")
def _():
    cache.set("present", None)  # None is a value: the key exists
    expect(cache.has_key("present"), True, "has_key of a key holding None")
    expect(cache.has_key("absent"), False, "has_key of a missing key")
    expect("present" in cache, True, "'present' in cache")
    expect("absent" in cache, False, "'absent' in cache")


@suite.check("get_or_set: stores the default once, with its timeout; callables too")
def _():
    cache.delete("gos")
    expect(cache.get_or_set("gos", "computed", timeout=40), "computed", "get_or_set, missing")
    expect_between(cache.ttl("gos"), 39, 40, "ttl after get_or_set")
    expect(cache.get_or_set("gos", "other"), "computed", "get_or_set, present")
    cache.delete("gos-callable")
    calls = []
    expect(cache.get_or_set("gos-callable", lambda: calls.append(1) or "made"), "made",
           "get_or_set with a callable")
    expect(cache.get_or_set("gos-callable", lambda: calls.append(1) or "again"), "made",
           "get_or_set with a callable, present")
    expect(len(calls), 1, "calls of the callable")


@suite.check("versions are separate keys; incr_version moves the value and its timeout")
def _():
    cache.set("versioned", "one", version=1, timeout=100)
    cache.set("versioned", "two", version=2)
    expect(cache.get("versioned", version=1), "one", "version 1")
    expect(cache.get("versioned", version=2), "two", "version 2")
    cache.delete("versioned", version=2)
    expect(cache.incr_version("versioned", version=1), 2, "incr_version")
    expect(cache.get("versioned", version=1), None, "version 1 after incr_version")
    expect(cache.get("versioned", version=2), "one", "version 2 after incr_version")
    expect_between(cache.ttl("versioned", version=2), 98, 100, "ttl after incr_version")


@suite.check("clear empties the cache")
def _():
    cache.set_many({"clear:a": 1, "clear:b": 2})
    cache.clear()
    expect(cache.has_key("clear:a"), False, "has_key after clear")
    expect(cache.keys("*"), [], "keys after clear")
    cache.set("after-clear", 1)
    expect(cache.get("after-clear"), 1, "set and get after clear")


def before():
    global cache
    settings.configure(
        CACHES={"default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{args.host}:{args.port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 10},
        }},
        USE_TZ=True,
    )
    django.setup()
    from django.core.cache import cache as default_cache
    cache = default_cache
    raw = cache.client.get_client()
    raw.ping()
    if args.flush:
        raw.flushdb()
    elif raw.dbsize() != 0:
        raise RuntimeError(f"database 0 at {args.host}:{args.port} holds {raw.dbsize()} keys; "
                           "this test clears the cache: give it an empty server, or --flush "
                           "to empty it")


if __name__ == "__main__":
    args = suite.arguments()
    sys.exit(suite.run(before))
