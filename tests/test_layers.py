"""The layers hold: only the store package talks to Redis, and the pure core and scanner stay pure.

Read from the source with `ast` (nothing is imported), so an import inside a
function or behind TYPE_CHECKING counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "regfd"

STORE_ONLY_MODULES = {"redis"}
# The store's client, its pipelines and scripts: an attribute of these names is the Redis client or
# reaches into it (`store.r`, `self.store.r`, a store module's `_r`).
STORE_ONLY_ATTRIBUTES = {"r", "_r", "pipeline", "register_script"}
IMPURE_MODULES = {"redis", "smtplib", "subprocess", "Milter", "socket"}
PURE_PACKAGES = ("core", "scan")


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in `tree`."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def store_violations(source: str) -> list[str]:
    """What in `source` only the store package may do: import redis, touch the client."""
    tree = ast.parse(source)
    found = [f"line {line}: imports {mod}" for line, mod in imported_roots(tree) if mod in STORE_ONLY_MODULES]
    found += [f"line {node.lineno}: .{node.attr} (the Redis client)" for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and node.attr in STORE_ONLY_ATTRIBUTES]
    return found


def impure_imports(source: str) -> list[str]:
    """Imports a pure module must not have (I/O, processes, the MTA, the store)."""
    return [f"line {line}: imports {mod}" for line, mod in imported_roots(ast.parse(source))
            if mod in IMPURE_MODULES]


def modules() -> list[Path]:
    """Every module of the package."""
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 40, f"walked {PACKAGE} and found only {len(found)} modules"
    return found


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_only_the_store_package_touches_redis() -> None:
    bad = {rel(p): v for p in modules() if p.parent.name != "store" or p.parent.parent != PACKAGE
           for v in [store_violations(p.read_text())] if v}
    assert not bad, f"outside regfd/store/, move these into a store module: {bad}"


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_core_and_scan_stay_pure(package: str) -> None:
    paths = sorted((PACKAGE / package).rglob("*.py"))
    assert paths
    bad = {rel(p): v for p in paths for v in [impure_imports(p.read_text())] if v}
    assert not bad, f"regfd/{package}/ must stay pure: {bad}"


@pytest.mark.parametrize("source", [
    "import redis\n",
    "from redis.client import Pipeline\n",
    "def f():\n    import redis.exceptions\n",
    "def f(store):\n    return store.r.hget('k', 'f')\n",
    "class A:\n    def f(self):\n        self.store.r.set('k', 1)\n",
    "def f(kept):\n    return kept._r\n",
    "def f(c):\n    return c.pipeline(transaction=True)\n",
])
def test_the_store_check_sees_redis(source: str) -> None:
    assert store_violations(source)


@pytest.mark.parametrize("source", ["import socket\n", "import subprocess as sp\n", "from smtplib import SMTP\n",
                                    "import Milter\n", "def f():\n    import redis\n"])
def test_the_purity_check_sees_impure_imports(source: str) -> None:
    assert impure_imports(source)


def test_the_checks_pass_clean_code() -> None:
    clean = "from regfd.store.client import Tx\n\ndef f(store, tx: Tx):\n    store.records.append(tx, {}, None)\n"
    assert not store_violations(clean) and not impure_imports(clean)
