"""Configuration: one TOML file, read and validated once at start.

Everything downstream receives frozen dataclasses, so a typo or a bad value
fails at start with one line naming the key, never later inside a callback.
Unknown keys are refused for the same reason: a misspelt `failure_action`
must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from regfd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
# The lexicons and the default policy: in a source checkout, its lexicons/ and
# config/; once installed, the copies the wheel puts under PREFIX/share/regfd
# (a config may point elsewhere to override either).
_INSTALLED = Path(sys.prefix) / "share" / "regfd"
_CHECKOUT = (REPO_ROOT / "lexicons").is_dir()
DEFAULT_LEXICON_DIR = REPO_ROOT / "lexicons" if _CHECKOUT else _INSTALLED / "lexicons"
DEFAULT_POLICY_FILE = REPO_ROOT / "config" / "policy.toml" if _CHECKOUT else _INSTALLED / "policy.toml"
# Where an installed regfd looks for its configuration when neither --config
# nor REGFD_CONFIG names one, and where it keeps its state without a config.
SYSTEM_CONFIG = Path("/etc/regfd/regfd.toml")
DEFAULT_STATE_DIR = Path("/var/lib/regfd")

MODES = ("enforce", "monitor")
FAILURE_ACTIONS = ("tempfail", "accept", "reject")
MILTER_ENGINES = ("libmilter", "asyncio")
MTAS = ("postfix", "sendmail")
DIGEST_ACTIONS = ("tag", "hold", "reject")  # the actions that notify the Corporate Secretary


@dataclass(frozen=True)
class MilterConfig:
    """`[milter]`: where the daemon listens, what it answers when it cannot decide, how tagged mail is marked."""

    socket: str = "inet:8899@127.0.0.1"
    failure_action: str = "tempfail"
    # Seconds allowed for one message's decision (lookups + scan); past it
    # the failure action applies.
    decision_timeout: float = 10.0
    reject_text: str = (
        "Message refused under the Regulation FD communications policy; "
        "contact the Corporate Secretary"
    )
    tempfail_text: str = "Regulation FD policy check temporarily unavailable, try again later"
    subject_prefix: str = ""  # e.g. "[RegFD] "; empty leaves the subject unchanged
    journal_bcc: str = ""  # address that receives a copy of every tagged message
    # Whether `regfd milter` also serves release/reject requests for its MTA
    # host: "auto" when it may run the MTA's queue commands (root for
    # Postfix's postsuper), "yes", or "no" (a separate `regfd agent` runs as root).
    agent: str = "auto"
    # Which milter engine serves the MTA: "asyncio" (regfd/mta/asyncio_engine.py:
    # the protocol spoken in Python, one event loop, no thread per event) or
    # "libmilter" (pymilter, the reference).
    engine: str = "asyncio"
    # Seconds from SIGTERM to exit, at most: messages in flight finish within
    # it (new ones get 451 4.7.1 meanwhile), then regfd exits whatever is left.
    drain_timeout: float = 30.0
    # Processes serving the MTA (asyncio engine only): 1 serves from the daemon's own process; N > 1
    # forks N workers on one listening socket beside a supervisor (regfd/mta/workers.py), 1..64.
    workers: int = 1


@dataclass(frozen=True)
class SmtpConfig:
    """`[smtp]`: the relay notifications go through, and their From address."""

    relay: str = "127.0.0.1:25"
    sender: str = "regfd@localhost.localdomain"
    timeout: float = 30.0

    @property
    def host(self) -> str:
        """The host part of `relay` (HOST:PORT), without the brackets around an IPv6 address."""
        return self.relay.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `relay`, which loading the config has checked."""
        return int(self.relay.rsplit(":", 1)[1])


@dataclass(frozen=True)
class PostfixConfig:
    """`[postfix]`: `config_directory` selects a Postfix instance (`-c DIR`); empty for the default one."""

    config_directory: str = ""


@dataclass(frozen=True)
class SendmailConfig:
    """`[sendmail]`: where Sendmail and its quarantined jobs are, used when `mta = "sendmail"`."""

    binary: str = "/usr/sbin/sendmail"
    config_file: str = ""  # empty: Sendmail's default (/etc/mail/sendmail.cf); otherwise -C FILE
    # Where quarantined jobs (hf files) are: Sendmail keeps them in its normal
    # queue directory. Empty: the config file's QueueDirectory, else /var/spool/mqueue.
    queue_directory: str = ""


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep hostile mail from costing unbounded time or memory.

    Anything over a limit is not skipped silently: it becomes an
    `unscannable` finding, which the default policy treats as material.
    """

    max_message_bytes: int = 25 * 1024 * 1024  # raw message bytes read
    max_text_bytes: int = 10 * 1024 * 1024  # extracted text scanned per message
    max_depth: int = 8  # MIME / attached-message nesting
    max_parts: int = 500
    max_attachment_bytes: int = 20 * 1024 * 1024  # one decoded attachment
    max_decompressed_bytes: int = 50 * 1024 * 1024  # zip/docx/pdf streams
    max_compression_ratio: int = 100
    time_budget: float = 5.0  # seconds per message
    # Messages over this many bytes are scanned in a child process that is killed at
    # time_budget + 1 s (one hostile part can outrun the budget, which is checked between
    # parts); 0: every message is scanned in place. scan/isolation.py.
    isolate_over: int = 1024 * 1024


@dataclass(frozen=True)
class NotifyConfig:
    """`[notify]`: whether senders hear of holds, the retry backoff and the reminder times (in seconds)."""

    notify_sender_on_hold: bool = True
    retry_initial: float = 5.0  # seconds before the first retry
    retry_max: float = 600.0
    hold_reminder_after: float = 4 * 3600.0  # seconds a message may wait in hold
    disclosure_reminder_before: float = 4 * 3600.0
    # Actions whose notice to the Corporate Secretary waits for a digest (one email listing every such
    # message, sent `digest_interval` seconds after the oldest of them) instead of going out at once.
    # e.g. ["tag"]; empty: every notice immediately.
    digest: tuple[str, ...] = ()
    digest_interval: float = 900.0


@dataclass(frozen=True)
class MetricsConfig:
    """`[metrics]`: where `regfd milter` serves /metrics for Prometheus; empty: not served.

    Loopback only: the figures say how much mail goes to Specified Persons
    and how much is held, which is not for the network at large.
    """

    listen: str = ""  # e.g. "127.0.0.1:9464"
    # Seconds a scrape waits for the store facts (outbox, held) before it reports regfd_store_up 0.
    store_timeout: float = 1.0

    @property
    def host(self) -> str:
        """The host part of `listen` (HOST:PORT), without the brackets around an IPv6 address."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`, which loading the config has checked."""
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class RegisterConfig:
    """`[register]`: the tamper-evident register's Ed25519 signing key and how often checkpoints are signed."""

    # PEM private key written by `regfd records keygen` (mode 0600); empty: STATE_DIR/register-signing.key.
    signing_key: str = ""
    # Seconds between the checkpoints the milter's outbox worker signs; 0: only `regfd records checkpoint`.
    checkpoint_interval: int = 3600


@dataclass(frozen=True)
class WebConfig:
    """`[web]`: the compliance console (`regfd web`), meant to sit behind the company's TLS reverse proxy."""

    # "127.0.0.1:8080" (HOST:PORT, loopback by default) or "unix:/run/regfd/web.sock".
    listen: str = "127.0.0.1:8080"
    # The console's public address (https://regfd.example.com), for links; empty: none.
    base_url: str = ""
    # Releases need this many people: 1, or 2 (a reviewer requests, another approver approves).
    approvals: int = 1
    # Session cookies carry `Secure`; false only for plain-http tests on loopback.
    secure_cookies: bool = True
    session_minutes: float = 480.0  # a session ends this long after sign-in
    login_attempts: int = 5  # failed sign-ins per name (and per client address) within login_window
    login_window: float = 900.0  # seconds
    # Trusted reverse-proxy sign-in: the header naming the signed-in user (e.g. "X-Remote-User"), accepted
    # only from these client addresses; both empty: off.
    proxy_user_header: str = ""
    trusted_proxies: tuple[str, ...] = ()
    # OpenID Connect sign-in (authorization code + PKCE): the issuer (its discovery document is at
    # ISSUER/.well-known/openid-configuration), this client's id, a file holding its secret (empty: a public
    # client), and the ID-token claim naming the local user (whose role is set with `regfd user add`).
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_user_claim: str = "email"


@dataclass(frozen=True)
class Config:
    """The whole configuration: the TOML file's top-level keys, with one dataclass per section."""

    internal_domains: tuple[str, ...] = ()
    corporate_secretary: tuple[str, ...] = ()
    redis_url: str = ""
    redis_prefix: str = "regfd:"
    state_dir: Path = DEFAULT_STATE_DIR
    mode: str = "enforce"
    timezone: str = "America/New_York"
    authorized_roles: tuple[str, ...] = ("CEO", "CFO")
    lexicon_dir: Path = DEFAULT_LEXICON_DIR
    policy_file: Path = DEFAULT_POLICY_FILE
    records_retention_days: int = 2555  # seven years
    # This MTA host's name as the MTA reports it (the `j` macro), which the
    # quarantine agent serves; empty: Postfix's myhostname, else the FQDN.
    mta_host: str = ""
    # Which MTA holds the quarantined messages: "postfix" (hold queue) or "sendmail" (quarantine).
    mta: str = "postfix"
    # A decision's record is answered to the MTA only once this many replicas
    # have it (Redis WAIT, up to redis_wait_timeout seconds; else 451 and the
    # client retries), so a failover cannot take back a recorded decision.
    # 0: no wait (a single Redis, or the window deploy/README.md describes).
    redis_wait_replicas: int = 0
    redis_wait_timeout: float = 0.5
    milter: MilterConfig = field(default_factory=MilterConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    postfix: PostfixConfig = field(default_factory=PostfixConfig)
    sendmail: SendmailConfig = field(default_factory=SendmailConfig)
    limits: ScanLimits = field(default_factory=ScanLimits)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    web: WebConfig = field(default_factory=WebConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = "<defaults>"

    @property
    def tz(self) -> ZoneInfo:
        """The company's time zone, in which bare dates typed by users and times in notifications are read."""
        return ZoneInfo(self.timezone)

    @property
    def effective_redis_url(self) -> str:
        """$REGFD_REDIS_URL, else `redis_url`; empty means the private redis-server under state_dir."""
        return os.environ.get("REGFD_REDIS_URL", "") or self.redis_url

    @property
    def signing_key_path(self) -> Path:
        """The register's signing key: `[register] signing_key`, else STATE_DIR/register-signing.key."""
        return Path(self.register.signing_key) if self.register.signing_key else self.state_dir / "register-signing.key"

    def describe_store(self) -> str:
        """Which store this configuration uses, for a person (a password in the URL is hidden)."""
        url = self.effective_redis_url
        if not url:
            return f"the private redis-server under {self.state_dir / 'redis'}"
        origin = "REGFD_REDIS_URL" if os.environ.get("REGFD_REDIS_URL") else "redis_url"
        return f"{re.sub(r'//[^@/]*@', '//***@', url)} (from {origin}), key prefix {self.redis_prefix!r}"


_SECTIONS: dict[str, type] = {
    "milter": MilterConfig,
    "smtp": SmtpConfig,
    "postfix": PostfixConfig,
    "sendmail": SendmailConfig,
    "limits": ScanLimits,
    "notify": NotifyConfig,
    "register": RegisterConfig,
    "web": WebConfig,
    "metrics": MetricsConfig,
}


def _fail(key: str, problem: str) -> ConfigError:
    return ConfigError(f"config: {key}: {problem}")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check a value against the type of its default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _fail(key, f"must be true or false (got {value!r})")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"must be an integer (got {value!r})")
        if value < 0:
            raise _fail(key, f"must not be negative (got {value})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, f"must be a number (got {value!r})")
        if value <= 0:
            raise _fail(key, f"must be positive (got {value})")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise _fail(key, f"must be a string (got {value!r})")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(key, f"must be a list of strings (got {value!r})")
        return tuple(value)
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise _fail(key, f"must be a non-empty path (got {value!r})")
        return Path(value)
    raise _fail(key, "unsupported")  # pragma: no cover - defaults are fixed


def _build(cls: type, table: dict[str, Any], prefix: str) -> Any:
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "source" or key not in {f.name for f in dataclasses.fields(cls)}:
            raise _fail(f"{prefix}{key}", "unknown key")
        kwargs[key] = _coerce(f"{prefix}{key}", value, getattr(defaults, key))
    return cls(**kwargs)


def _normalized(key: str, values: tuple[str, ...], kind: str) -> tuple[str, ...]:
    """Each value in its canonical form (address.py), or a ConfigError naming the key."""
    from regfd.core.address import normalize_address, normalize_domain

    normalize = normalize_domain if kind == "domain" else normalize_address
    out = []
    for v in values:
        try:
            out.append(normalize(v))
        except ValueError as exc:
            raise _fail(key, f"{v!r} is not a valid {kind} ({exc})") from None
    return tuple(out)


def _check_metrics_listen(listen: str) -> None:
    """`metrics.listen` must be HOST:PORT on a loopback address (127.0.0.0/8, ::1 or localhost)."""
    import ipaddress

    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail("metrics.listen", f"must be HOST:PORT, e.g. 127.0.0.1:9464 (got {listen!r})")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise _fail("metrics.listen", f"must be a loopback address such as 127.0.0.1 or [::1] (got {host!r}); "
                                      "scrape through a proxy to reach it from elsewhere")


def parse_config(data: dict[str, Any], source: str = "<string>", base: Path | None = None) -> Config:
    """Validate a parsed TOML document into a Config.

    Relative paths (`state_dir`, `lexicon_dir`, `policy_file`) are resolved
    against `base`, the config file's directory: a command run from another
    directory must use the same store, never start a throwaway private Redis
    where it happens to stand. Without a base, a relative path is refused.
    """
    sections = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise _fail(name, "must be a table")
        sections[name] = _build(cls, table, f"{name}.")
    top = _build(Config, {k: v for k, v in data.items() if k not in _SECTIONS}, "")
    cfg = dataclasses.replace(top, **sections, source=source)
    if cfg.mode not in MODES:
        raise _fail("mode", f"must be one of {', '.join(MODES)} (got {cfg.mode!r})")
    if cfg.mta not in MTAS:
        raise _fail("mta", f"must be one of {', '.join(MTAS)} (got {cfg.mta!r})")
    if not cfg.sendmail.binary:
        raise _fail("sendmail.binary", "must not be empty")
    if cfg.milter.agent not in ("auto", "yes", "no"):
        raise _fail("milter.agent", f"must be auto, yes or no (got {cfg.milter.agent!r})")
    if cfg.milter.engine not in MILTER_ENGINES:
        raise _fail("milter.engine", f"must be one of {', '.join(MILTER_ENGINES)} (got {cfg.milter.engine!r})")
    check_workers(cfg.milter.workers, cfg.milter.engine)
    if cfg.milter.failure_action not in FAILURE_ACTIONS:
        raise _fail(
            "milter.failure_action",
            f"must be one of {', '.join(FAILURE_ACTIONS)} (got {cfg.milter.failure_action!r})",
        )
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail("timezone", f"unknown time zone {cfg.timezone!r}") from None
    relay = cfg.smtp.relay
    host, _, port = relay.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail("smtp.relay", f"must be HOST:PORT (got {relay!r})")
    sender = _normalized("smtp.sender", (cfg.smtp.sender,), "address")[0]
    sock = cfg.milter.socket
    if not sock.startswith(("unix:", "local:", "inet:", "inet6:")):
        raise _fail("milter.socket", f"must be inet:PORT@HOST or unix:PATH (got {sock!r})")
    if cfg.milter.journal_bcc:
        _normalized("milter.journal_bcc", (cfg.milter.journal_bcc,), "address")
    if cfg.metrics.listen:
        _check_metrics_listen(cfg.metrics.listen)
    for action in cfg.notify.digest:
        if action not in DIGEST_ACTIONS:
            raise _fail("notify.digest", f"must list actions among {', '.join(DIGEST_ACTIONS)} (got {action!r})")
    if not cfg.authorized_roles:
        raise _fail("authorized_roles", "must name at least one role")
    _check_web(cfg.web)
    updates: dict[str, Any] = {
        "internal_domains": _normalized("internal_domains", cfg.internal_domains, "domain"),
        "corporate_secretary": _normalized("corporate_secretary", cfg.corporate_secretary, "address"),
        "authorized_roles": tuple(r.upper() for r in cfg.authorized_roles),
        "smtp": dataclasses.replace(cfg.smtp, sender=sender),
    }
    for key in ("state_dir", "lexicon_dir", "policy_file"):
        path = Path(getattr(cfg, key))
        if path.is_absolute():
            updates[key] = path
        elif base is not None:
            updates[key] = (base / path).resolve()
        else:
            raise _fail(key, f"{path} is relative: give an absolute path, or a config file to resolve it against")
    cfg = cast(Config, dataclasses.replace(cfg, **updates))
    key = cfg.register.signing_key
    if key and not Path(key).is_absolute():
        if base is None:
            raise _fail("register.signing_key", f"{key} is relative: give an absolute path")
        absolute = str((base / key).resolve())
        cfg = dataclasses.replace(cfg, register=dataclasses.replace(cfg.register, signing_key=absolute))
    if not cfg.lexicon_dir.is_dir():
        raise _fail("lexicon_dir", f"{cfg.lexicon_dir} is not a directory")
    if not cfg.policy_file.is_file():
        raise _fail("policy_file", f"{cfg.policy_file} does not exist")
    return cfg


MAX_WORKERS = 64


def check_workers(workers: int, engine: str) -> None:
    """`milter.workers` is 1..64 and needs the asyncio engine above 1.

    Also called by `regfd milter` when --workers or --engine overrides the file.
    With workers, /metrics is served by the background process, which adds up
    every worker's counts (prometheus_client's multiprocess mode).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise _fail("milter.workers", f"must be an integer from 1 to {MAX_WORKERS} (got {workers!r})")
    if workers > 1 and engine != "asyncio":
        raise _fail("milter.workers", f"{workers} workers need engine = \"asyncio\" (engine {engine!r} "
                                      "serves from one process)")


def _check_web(web: WebConfig) -> None:
    """The console's settings: a listen spec, 1 or 2 approvals, a header only with trusted proxies."""
    import ipaddress

    if web.listen.startswith("unix:"):
        if not web.listen[5:]:
            raise _fail("web.listen", "unix: needs a path")
    else:
        host, _, port = web.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail("web.listen", f"must be HOST:PORT or unix:PATH (got {web.listen!r})")
    if web.approvals not in (1, 2):
        raise _fail("web.approvals", f"must be 1 or 2 (got {web.approvals})")
    if web.base_url and not web.base_url.startswith(("https://", "http://")):
        raise _fail("web.base_url", f"must start with https:// (got {web.base_url!r})")
    if web.login_attempts < 1:
        raise _fail("web.login_attempts", "must be at least 1")
    for addr in web.trusted_proxies:
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise _fail("web.trusted_proxies", f"{addr!r} is not an IP address or network") from None
    if bool(web.proxy_user_header) != bool(web.trusted_proxies):
        raise _fail("web.proxy_user_header", "set it together with web.trusted_proxies (or neither)")
    if web.oidc_issuer:
        if not web.oidc_issuer.startswith(("https://", "http://")):
            raise _fail("web.oidc_issuer", f"must be the issuer's https:// URL (got {web.oidc_issuer!r})")
        if not web.oidc_client_id:
            raise _fail("web.oidc_client_id", "is required with web.oidc_issuer")
        if not web.base_url:
            raise _fail("web.base_url", "is required with web.oidc_issuer (the redirect URI is built from it)")
        if web.oidc_client_secret_file and not Path(web.oidc_client_secret_file).is_file():
            raise _fail("web.oidc_client_secret_file", f"{web.oidc_client_secret_file} is not a readable file")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load from `path`, else $REGFD_CONFIG, else /etc/regfd/regfd.toml, else built-in defaults."""
    if path is None:
        path = os.environ.get("REGFD_CONFIG") or None
    if path is None and SYSTEM_CONFIG.is_file():
        path = SYSTEM_CONFIG
    if path is None:
        return parse_config({}, "<defaults>")
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: {p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p), base=p.resolve().parent)
