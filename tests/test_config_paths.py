"""Paths in the configuration never depend on the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import regfd.config as config_module
from regfd.config import load_config, parse_config
from regfd.errors import ConfigError
from tests.conftest import REPO


def _config(tmp: Path, body: str) -> Path:
    (tmp / "etc").mkdir(exist_ok=True)
    path = tmp / "etc" / "regfd.toml"
    path.write_text(f'lexicon_dir = "{REPO / "lexicons"}"\npolicy_file = "{REPO / "config" / "policy.toml"}"\n{body}')
    return path


def test_relative_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, 'state_dir = "../state"\n'))
    assert cfg.state_dir == (tmp_path / "state").resolve()


def test_a_relative_path_without_a_config_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="state_dir: var is relative") as exc:
        parse_config({"state_dir": "var"})
    assert "\n" not in str(exc.value)


def test_the_system_config_is_used_when_nothing_else_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, 'state_dir = "/srv/regfd-state"\n')
    monkeypatch.delenv("REGFD_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", path)
    cfg = load_config()
    assert cfg.source == str(path) and cfg.state_dir == Path("/srv/regfd-state")
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "absent.toml")
    assert load_config().state_dir == Path("/var/lib/regfd")  # the built-in default is absolute too


def test_describe_store_hides_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGFD_REDIS_URL", "redis://regfd:s3cret@10.1.2.3:6380/2")
    cfg = parse_config({"state_dir": "/tmp/x"})
    assert cfg.describe_store() == "redis://***@10.1.2.3:6380/2 (from REGFD_REDIS_URL), key prefix 'regfd:'"
    monkeypatch.delenv("REGFD_REDIS_URL")
    assert cfg.describe_store() == "the private redis-server under /tmp/x/redis"


def test_every_command_uses_the_same_store_from_any_directory(tmp_path: Path) -> None:
    """The defect users met: run from another directory, `registry add` used a throwaway private Redis."""
    path = _config(tmp_path, 'state_dir = "../state"\ninternal_domains = ["allient.com"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("REGFD_REDIS_URL", "REGFD_CONFIG")}
    env["REGFD_CONFIG"] = str(path)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)

    def regfd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "regfd.cli", "--verbose", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=60)

    added = regfd("registry", "add", "bank.example", "--category", "analyst", cwd=elsewhere)
    assert added.returncode == 0, added.stderr
    assert f"store: the private redis-server under {(tmp_path / 'state' / 'redis').resolve()}" in added.stderr
    listed = regfd("registry", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "bank.example" in listed.stdout, listed.stderr
    assert not (elsewhere / "var").exists() and not (tmp_path / "var").exists()


@pytest.mark.parametrize("shipped", ["config/regfd.toml", "deploy/regfd.toml"])
def test_the_shipped_configuration_files_load_with_every_section_in_its_table(shipped: str) -> None:
    # `make run` starts on config/regfd.toml, the Debian package installs deploy/regfd.toml: a key
    # left under the wrong [table] by an edit would stop regfd at start.
    cfg = load_config(REPO / shipped)
    assert cfg.notify.digest == () and cfg.web.listen.startswith("127.0.0.1") and cfg.metrics.listen == ""
    assert cfg.register.checkpoint_interval > 0
