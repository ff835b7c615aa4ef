#!/bin/sh
# ensure-package.sh PACKAGE TEST-COMMAND...
#
# Runs TEST-COMMAND; if it fails, installs the Debian package PACKAGE with apt-get (only as
# root on a system with apt-get) and tries again. When it cannot install, it prints the
# exact command to run and fails, so `make test` stops with a reason rather than a wall of
# compiler errors.
package=$1
shift
"$@" >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "$package is missing: installing it with apt-get (needs the network)" >&2
  # `make -j` may run two of these at once; apt-get refuses a second caller, so wait for
  # the first (flock, from util-linux, is on every Debian system).
  if { flock /tmp/keystonelight-apt.lock sh -c \
         "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq '$package'"; } >&2 &&
     "$@" >/dev/null 2>&1; then
    exit 0
  fi
  echo "error: installing $package with apt-get failed; see the messages above." >&2
  exit 1
fi
echo "error: $package is needed and missing. On Debian or Ubuntu run:" >&2
echo "    sudo apt-get update && sudo apt-get install -y $package" >&2
echo "Elsewhere, install it from your system's packages and run make again." >&2
exit 1
