#!/usr/bin/env bash
# Build the Debian package: dist/regfd_<version>_<arch>.deb (`make deb`).
#
#   deploy/deb/build-deb.sh [--out DIR]
#
# What it contains: a complete virtual environment of Debian's /usr/bin/python3
# under /opt/regfd (regfd's wheel with the `milter` extra; pymilter compiled
# here against libmilter), /usr/bin/regfd -> /opt/regfd/bin/regfd, the systemd
# units in /lib/systemd/system (ExecStart=/usr/bin/regfd ...), the conffile
# /etc/regfd/regfd.toml, the docs in /usr/share/doc/regfd and the maintainer
# scripts of this directory (users, groups, directories; they never start or
# enable a service).
#
# Why a private mount namespace: a venv is not relocatable (bin/ scripts'
# shebangs, pyvenv.cfg, the activate scripts and the file names compiled into
# every .pyc name its path). So the venv is built at its final path,
# /opt/regfd, but inside `unshare --mount`: there an overlay over /opt (the
# host's /opt stays visible, every write goes to a throwaway upper directory)
# gives the mountpoint /opt/regfd, and the staging directory is bind-mounted
# onto it. pip writes straight into the staging tree, every embedded path is
# already /opt/regfd, nothing is rewritten afterwards, and the real /opt (and
# any regfd installed there) is never touched: the mounts vanish with the
# namespace. Needs root (or unprivileged user namespaces: then `unshare
# --map-root-user`); dpkg-deb --root-owner-group makes every file root's.
#
# Build dependencies (Debian): python3-venv python3-dev gcc libmilter-dev
# dpkg-dev (dpkg-shlibdeps). Network: PyPI only (pip, with its usual cache).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/deploy/deb
OUT=$REPO/dist
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "build-deb: unknown argument: $1" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
PREFIX=/opt/regfd

die() { echo "build-deb: $*" >&2; exit 1; }

# --- build dependencies -----------------------------------------------------------------------------------
missing=()
[ -x "$PY" ] || missing+=(python3)
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
"$PY" -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing+=(python3-dev)
command -v gcc >/dev/null || missing+=(gcc)
[ -e /usr/include/libmilter/mfapi.h ] || missing+=(libmilter-dev)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v unshare >/dev/null || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] || die "missing build dependencies; run as root: apt-get install ${missing[*]}"

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$REPO/pyproject.toml")
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$("$PY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
ARCH=$(dpkg --print-architecture)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/regfd-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
mkdir -p "$STAGE$PREFIX" "$WORK/src" "$WORK/wheel" "$WORK/ns/upper" "$WORK/ns/work"

# --- the wheel, from a copy of the sources (the build leaves nothing in the checkout) ----------------------
cp "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/README.md" "$WORK/src/"
for d in regfd lexicons config deploy; do  # the C word pass is compiled here, for Debian's python3 ('*.so' left out)
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.so' -cf - "$d" | tar -C "$WORK/src" -xf -
done

# --- the venv at /opt/regfd, in a private mount namespace -------------------------------------------------
if [ "$(id -u)" = 0 ]; then ns=(unshare --mount --propagation private); else ns=(unshare --map-root-user --mount); fi
export PY PREFIX WORK STAGE
"${ns[@]}" /bin/bash -euo pipefail -c '
  mount -t overlay regfd-build -o "lowerdir=/opt,upperdir=$WORK/ns/upper,workdir=$WORK/ns/work" /opt
  mkdir -p "$PREFIX"
  mount --bind "$STAGE$PREFIX" "$PREFIX"
  "$PY" -m venv "$PREFIX"
  "$PREFIX/bin/pip" wheel --quiet --no-deps --wheel-dir "$WORK/wheel" "$WORK/src"
  wheel=$(ls "$WORK"/wheel/regfd-*.whl)
  "$PREFIX/bin/pip" install --quiet "$wheel[milter]"
  # The package manager owns this tree: no pip (nor setuptools) to change it behind dpkg.
  "$PREFIX/bin/pip" uninstall --quiet --yes pip setuptools
  # Every module is compiled now (pip did regfd and its dependencies), so nothing writes at run time.
  "$PREFIX/bin/python" -m compileall -q -j 0 "$PREFIX/lib" >/dev/null
  "$PREFIX/bin/regfd" --help >/dev/null
  "$PREFIX/bin/python" -c "import milter, Milter, regfd, regfd.scan._wordset"
'
[ -x "$STAGE$PREFIX/bin/regfd" ] || die "the venv was not built"
if grep -rIl --exclude-dir=__pycache__ "$STAGE" "$STAGE$PREFIX" >/dev/null; then
  die "the staging path leaked into the venv: $(grep -rIl "$STAGE" "$STAGE$PREFIX" | head -3)"
fi

# --- the rest of the tree ---------------------------------------------------------------------------------
mkdir -p "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/regfd" "$STAGE/usr/share/doc/regfd/deploy"
ln -s "$PREFIX/bin/regfd" "$STAGE/usr/bin/regfd"
for unit in regfd.service regfd-agent.service regfd-web.service; do
  sed -e 's#/usr/local/bin/regfd#/usr/bin/regfd#g' \
      -e 's#file:///opt/regfd/share/doc/regfd/deploy/README.md#file:///usr/share/doc/regfd/deploy/README.md#' \
      "$REPO/deploy/$unit" > "$STAGE/lib/systemd/system/$unit"
  grep -q '^ExecStart=/usr/bin/regfd ' "$STAGE/lib/systemd/system/$unit" || die "$unit: ExecStart not rewritten"
  chmod 0644 "$STAGE/lib/systemd/system/$unit"
done
install -m 0640 "$REPO/deploy/regfd.toml" "$STAGE/etc/regfd/regfd.toml"
chmod 0750 "$STAGE/etc/regfd"
install -m 0644 "$REPO/README.md" "$STAGE/usr/share/doc/regfd/README.md"
install -m 0644 "$HERE/copyright" "$STAGE/usr/share/doc/regfd/copyright"
for f in README.md postfix-main.cf.snippet sendmail.mc.snippet nginx-regfd-web.conf; do
  install -m 0644 "$REPO/deploy/$f" "$STAGE/usr/share/doc/regfd/deploy/$f"
done

# --- DEBIAN/ ----------------------------------------------------------------------------------------------
mkdir -p "$STAGE/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "$HERE/$s" "$STAGE/DEBIAN/$s"; done
echo /etc/regfd/regfd.toml > "$STAGE/DEBIAN/conffiles"

# Shared libraries of the compiled modules (pymilter's libmilter, libc, ...): dpkg-shlibdeps maps them to
# packages; the libraries that manylinux wheels bundle in their own *.libs directories belong to the package.
mkdir -p "$WORK/shlibs/debian"
printf 'Source: regfd\n\nPackage: regfd\nArchitecture: any\n' > "$WORK/shlibs/debian/control"
mapfile -t elves < <(find "$STAGE$PREFIX" -type f \( -name '*.so' -o -name '*.so.*' \) ! -path '*.libs/*')
libdirs=()
while IFS= read -r d; do libdirs+=("-l$d"); done < <(find "$STAGE$PREFIX" -type d -name '*.libs')
shlibs=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --ignore-missing-info "${libdirs[@]}" "${elves[@]}" 2>"$WORK/shlibs.err" \
  | sed -n 's/^shlibs:Depends=//p') || { cat "$WORK/shlibs.err" >&2; die "dpkg-shlibdeps failed"; }
case "$shlibs" in *libmilter1.0.1*) ;; *) die "pymilter is not linked against libmilter1.0.1 ($shlibs)";; esac

depends="python3 (>= $PYVER), python3 (<< $PYNEXT), $shlibs"
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: regfd
Version: $VERSION
Architecture: $ARCH
Maintainer: ${DEB_MAINTAINER:-regfd packaging <root@localhost>}
Installed-Size: $size
Depends: $depends
Recommends: redis-server
Suggests: postfix | sendmail-bin
Section: mail
Priority: optional
Description: Regulation FD milter for outgoing email (Postfix, Sendmail)
 regfd enforces a public company's Regulation FD communications policy on
 every outgoing message: it knows the Specified Persons, the authorized
 officers and what counts as material or non-GAAP content, and tags, holds
 or rejects mail accordingly, with a record of every communication.
 .
 This package ships a self-contained Python $PYVER virtual environment in
 /opt/regfd, the systemd units regfd (the milter, unprivileged) and
 regfd-agent (the quarantine agent, root) and /etc/regfd/regfd.toml. It
 neither enables nor starts them: see /usr/share/doc/regfd/deploy/README.md.
CONTROL
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  > "$STAGE/DEBIAN/md5sums"

mkdir -p "$OUT"
deb="$OUT/regfd_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz -z6 --build "$STAGE" "$deb" >/dev/null
echo "$deb"
