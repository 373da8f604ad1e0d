"""`make deb`: the Debian package, built from this checkout, inspected, run, installed and purged.

The package (deploy/deb/build-deb.sh) carries a venv of Debian's python3 at
/opt/regfd. A venv only works at the path it was built for, and this test
must not touch the host's /opt, /etc or users. So:

- the packaged venv runs from a `dpkg-deb -x` extraction inside `unshare
  --mount`, where an overlay over /opt (writes go to a throwaway directory,
  the host's /opt stays visible) gives the mountpoint /opt/regfd and the
  extracted tree is bind-mounted onto it: `regfd --help`, `registry add` and
  `check` (hold) on the test Redis, with the installed lexicons and policy;
- the maintainer scripts run for real with `dpkg -i` / `dpkg --purge` in a
  chroot whose root is an overlay of the host's / on a tmpfs, in a private
  mount namespace: users, groups, modes, statoverrides and the purge are
  checked there and vanish with the namespace.

Everything is built and extracted under pytest's temp dirs: nothing in the
checkout, nothing cached but pip's own cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, RedisServer

pytestmark = pytest.mark.e2e

BUILD = REPO / "deploy" / "deb" / "build-deb.sh"

# Mounts /opt as an overlay (throwaway upper dir $1) and the extracted tree's opt/regfd ($2) on /opt/regfd,
# then runs the rest of the arguments.
IN_OPT = """
set -e
work=$1 tree=$2; shift 2
mkdir -p "$work/upper" "$work/work"
mount -t overlay regfd-test -o "lowerdir=/opt,upperdir=$work/upper,workdir=$work/work" /opt
mkdir -p /opt/regfd
mount --bind "$tree/opt/regfd" /opt/regfd
exec "$@"
"""


def _run(argv: Sequence[str], env: dict[str, str] | None = None,
         cwd: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@dataclass
class Deb:
    path: Path
    seconds: float
    tmp: Path


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    if os.geteuid() != 0:
        pytest.skip("needs root: the build and the checks use private mount namespaces (unshare --mount)")
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "unshare", "gcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} to build the Debian package")
    if not Path("/usr/include/libmilter/mfapi.h").exists() or not Path("/usr/bin/python3").exists():
        pytest.skip("needs libmilter-dev and Debian's python3 to build the Debian package")
    tmp = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    r = _run(["bash", str(BUILD), "--out", str(tmp / "out")], cwd=tmp, env={**os.environ, "TMPDIR": str(tmp)})
    seconds = time.monotonic() - started
    if r.returncode != 0 and "missing build dependencies" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    [path] = (tmp / "out").glob("regfd_*_*.deb")
    assert r.stdout.strip() == str(path)
    assert list(tmp.glob("regfd-deb.*")) == []  # the build's work dir is removed
    return Deb(path, seconds, tmp)


def _field(info: str, name: str) -> str:
    m = re.search(rf"^ {name}: (.*)$", info, re.M)
    assert m, f"no {name} in dpkg-deb --info"
    return m.group(1)


def _check_control(deb: Deb) -> None:
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version
    arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
    assert deb.path.name == f"regfd_{version.group(1)}_{arch}.deb"
    info = _run(["dpkg-deb", "--info", str(deb.path)]).stdout
    assert _field(info, "Package") == "regfd" and _field(info, "Version") == version.group(1)
    assert _field(info, "Architecture") == arch
    depends = [d.strip() for d in _field(info, "Depends").split(",")]
    assert "python3 (>= 3.11)" in depends
    assert any(re.fullmatch(r"python3 \(<< 3\.\d+\)", d) for d in depends)  # the venv is bound to one python3.X
    assert any(d.startswith("libmilter1.0.1") for d in depends)  # pymilter, compiled at build time
    assert not any(d.startswith("python3-venv") for d in depends)
    assert _run(["dpkg-deb", "--field", str(deb.path), "Installed-Size"]).stdout.strip().isdigit()
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^ +\d+ bytes, +\d+ lines +\* +{script} +#!/bin/sh$", info, re.M), script
    control = deb.tmp / "control"
    assert _run(["dpkg-deb", "--control", str(deb.path), str(control)]).returncode == 0
    assert (control / "conffiles").read_text().split() == ["/etc/regfd/regfd.toml"]
    postinst = (control / "postinst").read_text()
    # It never starts or enables a service (it prints what to do).
    assert not re.search(r"^[ \t]*(systemctl|deb-systemd-invoke|deb-systemd-helper|invoke-rc\.d)[ \t]"
                         r"[^\n]*\b(start|enable|restart)\b", postinst, re.M)
    assert "systemctl daemon-reload" in postinst  # the only systemctl it runs
    assert "systemctl enable --now regfd regfd-agent" in postinst
    if shutil.which("lintian"):  # not installed by this suite: only when the machine has it
        r = _run(["lintian", "--no-tag-display-limit", str(deb.path)])
        assert " E: " not in r.stdout and not r.stdout.startswith("E:"), r.stdout


@dataclass
class Entry:
    mode: str
    owner: str
    target: str


def _contents(deb: Deb) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for line in _run(["dpkg-deb", "--contents", str(deb.path)]).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        out[path.removeprefix(".").rstrip("/") or "/"] = Entry(mode, owner, target)
    return out


def _check_contents(deb: Deb) -> None:
    files = _contents(deb)
    assert {e.owner for e in files.values()} == {"root/root"}
    assert files["/usr/bin/regfd"] == Entry("lrwxrwxrwx", "root/root", "/opt/regfd/bin/regfd")
    assert files["/opt/regfd/bin/python3"].target == "/usr/bin/python3"  # Debian's interpreter, not a copy
    assert files["/opt/regfd/bin/regfd"].mode == "-rwxr-xr-x"
    for unit in ("regfd.service", "regfd-agent.service", "regfd-web.service"):
        assert files[f"/lib/systemd/system/{unit}"].mode == "-rw-r--r--"
    assert "/usr/share/doc/regfd/deploy/nginx-regfd-web.conf" in files
    # The conffile: group and mode come from postinst's dpkg-statoverride (root:regfd-compliance).
    assert files["/etc/regfd"].mode == "drwxr-x---"
    assert files["/etc/regfd/regfd.toml"].mode == "-rw-r-----"
    for doc in ("README.md", "deploy/README.md", "copyright", "deploy/postfix-main.cf.snippet"):
        assert files[f"/usr/share/doc/regfd/{doc}"].mode == "-rw-r--r--", doc
    share = "/opt/regfd/share/regfd"
    assert {f"{share}/policy.toml", f"{share}/regfd.toml", f"{share}/lexicons/material.toml"} <= files.keys()
    site = [p for p in files if "/site-packages/" in p]
    assert any(re.search(r"/site-packages/milter\.cpython-3\d+-[^/]*\.so$", p) for p in site)  # pymilter, built
    assert any(p.endswith("/site-packages/regfd/cli/__init__.py") for p in site)
    assert any(re.search(r"/site-packages/regfd/scan/_wordset\.cpython-3\d+-[^/]*\.so$", p) for p in site)  # ours
    assert not any(re.search(r"/site-packages/(pip|setuptools)/", p) for p in site)  # dpkg owns the venv
    # Nothing but the package's own paths (no /var, no /usr/local, no build leftovers).
    tops = {p.split("/")[1] for p in files if p != "/"}
    assert tops == {"etc", "lib", "opt", "usr"}
    assert not any(p.startswith("/usr/local") or "/tmp/" in p for p in files)


def _extract(deb: Deb) -> Path:
    tree = deb.tmp / f"x{uuid.uuid4().hex[:6]}"
    assert _run(["dpkg-deb", "-x", str(deb.path), str(tree)]).returncode == 0
    return tree


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_mtime_ns for p in root.rglob("*")}


def _in_opt(deb: Deb, tree: Path, argv: Sequence[str], env: dict[str, str],
            cwd: Path | str = "/") -> subprocess.CompletedProcess[str]:
    """Run argv with the extracted tree at /opt/regfd, in a private mount namespace (the host's /opt untouched)."""
    work = deb.tmp / f"ns{uuid.uuid4().hex[:6]}"
    return _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_OPT, "sh", str(work), str(tree),
                 *argv], env=env, cwd=cwd)


def _check_packaged_venv(deb: Deb, redis_server: RedisServer, tmp_path: Path) -> None:
    tree = _extract(deb)
    units = {u: (tree / "lib/systemd/system" / u).read_text()
             for u in ("regfd.service", "regfd-agent.service", "regfd-web.service")}
    assert "ExecStart=/usr/bin/regfd milter" in units["regfd.service"]
    assert "ExecStart=/usr/bin/regfd agent" in units["regfd-agent.service"]
    assert "ExecStart=/usr/bin/regfd web" in units["regfd-web.service"]
    assert all("/usr/local" not in text for text in units.values())
    assert (tree / "etc/regfd/regfd.toml").read_bytes() == (REPO / "deploy/regfd.toml").read_bytes()
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "regfd.toml"
    config.write_text(f"""\
internal_domains = ["allient.com"]
corporate_secretary = ["corpsec@allient.com"]
redis_prefix = "deb{uuid.uuid4().hex[:8]}:"
state_dir = "{state}"
[smtp]
relay = "127.0.0.1:25"
sender = "regfd@allient.com"
""")  # no lexicon_dir / policy_file: the packaged ones under /opt/regfd/share/regfd
    message = tmp_path / "numbers.eml"
    message.write_text("From: bob@allient.com\nTo: ana@bank.example\nSubject: numbers\n\n"
                       "Between us, we will miss the quarter and the guidance comes down next week.\n")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "REGFD_CONFIG": str(config),
           "REGFD_REDIS_URL": redis_server.url, "REGFD_ACTOR": "debtest"}
    regfd = "/opt/regfd/bin/regfd"
    before = _snapshot(tree / "opt/regfd")
    r = _in_opt(deb, tree, [regfd, "--help"], env)
    assert r.returncode == 0 and "usage: regfd" in r.stdout, r.stderr
    # The interpreter is Debian's, the modules are the package's (not this checkout's), pymilter loads.
    probe = ("import json, sys, milter, regfd; print(json.dumps([sys.prefix, sys.base_prefix, regfd.__file__, "
             "milter.__file__]))")
    r = _in_opt(deb, tree, ["/opt/regfd/bin/python", "-c", probe], env)
    assert r.returncode == 0, r.stderr
    prefix, base, regfd_file, milter_file = json.loads(r.stdout)
    assert prefix == "/opt/regfd" and base == "/usr"
    assert regfd_file.startswith("/opt/regfd/lib/") and milter_file.startswith("/opt/regfd/lib/")
    r = _in_opt(deb, tree, [regfd, "--verbose", "registry", "add", "bank.example", "--category", "analyst"], env)
    assert r.returncode == 0 and "added bank.example" in r.stdout, r.stderr
    assert redis_server.url in r.stderr  # --verbose names the store
    r = _in_opt(deb, tree, [regfd, "check", str(message), "--json"], env)
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["action"] == "hold" and verdict["recipients"][0]["category"] == "analyst"
    # Run as root over the whole tree, yet nothing was written into it (every module was compiled at build).
    assert _snapshot(tree / "opt/regfd") == before


# In a chroot whose / is an overlay of the host's / (upper layer on a tmpfs): dpkg -i, what postinst made,
# the packaged regfd as the service user, dpkg --purge, what is left. Prints `key value` lines.
CHROOT = r"""
set -e
deb=$1 base=$2
mount -t tmpfs regfd-test "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay regfd-test -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
mount --rbind /dev "$base/root/dev"
mount -t proc proc "$base/root/proc"
mkdir -p "$base/root/run/regfd-test"
cp "$deb" "$base/root/run/regfd-test/regfd.deb"
exec chroot "$base/root" /bin/sh -c '
  set -e
  for u in regfd; do ! getent passwd $u >/dev/null || { echo "preexisting user $u"; exit 3; }; done
  rm -rf /var/lib/regfd /var/spool/postfix/regfd /opt/regfd /etc/regfd
  dpkg -i /run/regfd-test/regfd.deb
  echo "user $(id -nu regfd) $(id -ng regfd) $(id -nG regfd | tr " " ,)"
  echo "shell $(getent passwd regfd | cut -d: -f7)"
  for p in /etc/regfd /etc/regfd/regfd.toml /var/lib/regfd /var/spool/postfix/regfd; do
    echo "stat $(stat -c "%n %U:%G %a" $p)"
  done
  echo "override $(dpkg-statoverride --list /etc/regfd/regfd.toml)"
  runuser -u regfd -- /usr/bin/regfd --help >/dev/null && echo "runs-as-regfd yes"
  runuser -u regfd -- sh -c "cat /etc/regfd/regfd.toml >/dev/null" && echo "service-reads-config yes"
  runuser -u regfd -- sh -c "touch /etc/regfd/x" 2>/dev/null || echo "service-writes-config no"
  runuser -u regfd -- sh -c "touch /var/lib/regfd/x && rm /var/lib/regfd/x" && echo "service-writes-state yes"
  echo "status $(dpkg-query -W -f="\${Status}" regfd)"
  dpkg -i /run/regfd-test/regfd.deb
  echo "restat $(stat -c "%n %U:%G %a" /etc/regfd/regfd.toml)"
  dpkg --purge regfd
  getent passwd regfd >/dev/null && echo "after user" || echo "after user-gone"
  getent group regfd-compliance >/dev/null && echo "after group" || echo "after group-gone"
  for p in /var/lib/regfd /etc/regfd /opt/regfd /usr/bin/regfd /lib/systemd/system/regfd.service \
           /var/spool/postfix/regfd; do
    [ -e $p ] || [ -L $p ] && echo "after left $p" || true
  done
  dpkg-statoverride --list | grep -q regfd && echo "after override-left" || true
  echo done
'
"""


def _check_install_and_purge(deb: Deb) -> None:
    base = deb.tmp / "chroot"
    base.mkdir()
    r = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", CHROOT, "sh", str(deb.path), str(base)])
    if "preexisting user" in r.stdout:
        warnings.warn("dpkg -i not checked: this machine has a regfd user (not a first install)", stacklevel=1)
        return
    if r.returncode != 0 and "overlay" in r.stderr and "mount" in r.stderr:
        warnings.warn(f"dpkg -i not checked: cannot mount an overlay of / here: {r.stderr.strip()}", stacklevel=1)
        return
    assert r.returncode == 0 and r.stdout.rstrip().endswith("done"), r.stdout + r.stderr
    out = r.stdout
    # postinst: what it did, and that it tells what to do instead of starting services.
    assert "services are neither enabled nor started" in out and "systemctl enable --now regfd regfd-agent" in out
    user = re.search(r"^user (\S+) (\S+) (\S+)$", out, re.M)
    assert user and user.group(1) == "regfd" and user.group(2) == "regfd"
    assert "regfd-compliance" in user.group(3).split(",")
    assert "shell /usr/sbin/nologin" in out
    assert "stat /etc/regfd root:regfd-compliance 750" in out
    assert "stat /etc/regfd/regfd.toml root:regfd-compliance 640" in out
    assert "stat /var/lib/regfd regfd:regfd-compliance 2770" in out
    if "postfix" in subprocess.run(["getent", "group", "postfix"], capture_output=True, text=True).stdout:
        assert "stat /var/spool/postfix/regfd regfd:postfix 750" in out
    assert "override root regfd-compliance 640 /etc/regfd/regfd.toml" in out
    for line in ("runs-as-regfd yes", "service-reads-config yes", "service-writes-config no",
                 "service-writes-state yes", "status install ok installed"):
        assert line in out, out
    # A second install (the upgrade path): postinst says to restart, the conffile keeps its group and mode.
    assert "regfd upgraded from" in out and "restat /etc/regfd/regfd.toml root:regfd-compliance 640" in out
    # postrm purge: state, user and group gone; nothing of the package left.
    assert "after user-gone" in out and "after group-gone" in out
    assert "after left" not in out and "after override-left" not in out, out
    # The host saw none of it.
    assert subprocess.run(["getent", "passwd", "regfd"], capture_output=True).returncode != 0


def test_debian_package(deb: Deb, redis_server: RedisServer, tmp_path: Path) -> None:
    """One test, so that xdist builds the package once: control, contents, the venv at work, dpkg -i/--purge."""
    opt_before = sorted(os.listdir("/opt")) if Path("/opt").is_dir() else []
    assert deb.seconds < 300, f"the package took {deb.seconds:.0f} s to build"  # ~20 s with pip's cache
    _check_control(deb)
    _check_contents(deb)
    _check_packaged_venv(deb, redis_server, tmp_path)
    _check_install_and_purge(deb)
    assert (sorted(os.listdir("/opt")) if Path("/opt").is_dir() else []) == opt_before  # the host's /opt untouched
