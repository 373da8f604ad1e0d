#!/usr/bin/env bash
# Install the Debian packages regfd needs, when they are missing.
#   install-system-deps.sh run    what `make run` needs (redis-server, libmilter, a compiler, venv)
#   install-system-deps.sh test   plus what the test suite needs (postfix, miltertest, swaks, chromium)
# As root it installs them (Postfix is installed without starting any daemon and
# without touching /etc/postfix: debconf "No configuration" and a temporary
# policy-rc.d). Otherwise it prints the exact command to run and fails.
set -euo pipefail

want="${1:-run}"
missing=()
need() { # need PACKAGE TEST...
  local pkg=$1; shift
  if ! "$@" >/dev/null 2>&1; then missing+=("$pkg"); fi
}
have() { command -v "$1" || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

need redis-server have redis-server
need libmilter-dev test -e /usr/include/libmilter/mfapi.h
need gcc have gcc
need python3-dev python3 -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
need python3-venv python3 -c 'import ensurepip, venv'
if [ "$want" = test ]; then
  need postfix test -x /usr/sbin/postfix
  need miltertest have miltertest
  need swaks have swaks
  need chromium test -x /usr/bin/chromium  # the console's browser tests (Playwright drives it)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "regfd: missing system packages: ${missing[*]}" >&2
  echo "regfd: run as root: apt-get update && echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections && $cmd" >&2
  exit 1
fi

echo "regfd: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
apt-get update -q >/dev/null
$cmd -q
