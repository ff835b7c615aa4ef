"""The checks of the Python interoperability tests in this folder, printed as TAP.

A test registers its checks in order with ``@suite.check("what it shows")`` and calls
``suite.main()``: it prints the plan ``1..N``, then ``ok N - name`` or ``not ok N - name:
why`` for each check, and exits 1 if any failed. A check fails when it raises; the reason
is one line (a Failure's message, or the exception's type and message). Checks do not
depend on one another: a failed one leaves the next to run.

Standard library only, so that Debian's /usr/bin/python3 runs it as it is.
"""

import argparse
import os
import sys
import traceback


class Failure(Exception):
    """A check saw something other than what it expected; the message says what."""


def expect(got, want, what):
    if got != want:
        raise Failure(f"{what}: got {got!r}, expected {want!r}")


def expect_true(condition, what):
    if not condition:
        raise Failure(what)


def expect_between(got, low, high, what):
    """low <= got <= high, both ends included."""
    if not isinstance(got, (int, float)) or isinstance(got, bool) or not low <= got <= high:
        raise Failure(f"{what}: got {got!r}, expected {low}..{high}")


def expect_error(call, error_type, fragment, what):
    """call() raises error_type, whose message holds fragment (case-insensitive)."""
    try:
        result = call()
    except error_type as e:
        if fragment.lower() not in str(e).lower():
            raise Failure(f"{what}: the error was {str(e)!r}, expected one with {fragment!r}")
        return e
    raise Failure(f"{what}: no error (got {result!r}), expected {error_type.__name__} "
                  f"with {fragment!r}")


def one_line(text):
    """text on one line of printable characters: an error may quote a binary key."""
    text = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Skip(Exception):
    """Raised by a check that cannot run against this server, with the reason: the check
    is reported as `ok N - name # SKIP reason`, and counted apart."""


class Suite:
    def __init__(self, description):
        self.description = description
        self.checks = []

    def check(self, name):
        def register(function):
            self.checks.append((name, function))
            return function
        return register

    def arguments(self):
        """The command line every test here takes: PORT, --host and --flush."""
        parser = argparse.ArgumentParser(description=self.description)
        parser.add_argument("port", type=int, help="the server's TCP port")
        parser.add_argument("--host", default="127.0.0.1", help="the server's address "
                            "(default 127.0.0.1)")
        parser.add_argument("--flush", action="store_true", help="empty database 0 first; "
                            "without it the test refuses a server that holds keys")
        return parser.parse_args()

    def run(self, before=None):
        """Runs every check; before(), when given, runs first, and if it raises the
        whole test bails out. Returns the exit status."""
        if before is not None:
            try:
                before()
            except Exception as e:  # noqa: BLE001: any error there stops everything
                print(f"Bail out! {one_line(type(e).__name__ + ': ' + str(e))}", flush=True)
                return 2
        print(f"1..{len(self.checks)}", flush=True)
        failed = skipped = 0
        for number, (name, function) in enumerate(self.checks, 1):
            try:
                function()
            except Skip as e:
                skipped += 1
                print(f"ok {number} - {name} # SKIP {one_line(e)}", flush=True)
            except Failure as e:
                failed += 1
                print(f"not ok {number} - {name}: {one_line(e)}", flush=True)
            except Exception as e:  # noqa: BLE001: a client error is a failed check
                failed += 1
                where = ""
                frames = [f for f in traceback.extract_tb(e.__traceback__)
                          if os.path.realpath(f.filename) == os.path.realpath(sys.argv[0])]
                if frames:
                    where = f" (line {frames[-1].lineno})"
                print(f"not ok {number} - {name}: {one_line(type(e).__name__ + ': ' + str(e))}"
                      f"{where}", flush=True)
            else:
                print(f"ok {number} - {name}", flush=True)
        print(f"# {len(self.checks) - failed - skipped} passed, {failed} failed, "
              f"{skipped} skipped", flush=True)
        return 1 if failed else 0
