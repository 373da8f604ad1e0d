"""What every route of the console is given: the configuration, the store's services, the templates.

Built once by the app factory (app.py) and kept on `app.state.console`; the
route modules read it from the request, so no route wires services itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from regfd.compliance.approvals import Decisions
from regfd.compliance.disclosures import Disclosures
from regfd.compliance.quarantine import Quarantine
from regfd.compliance.records import Records
from regfd.compliance.render import local_time
from regfd.core.clock import now as utcnow
from regfd.store.users_store import UsersStore
from regfd.web.message_view import mark

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.redis_store import RedisStore
    from regfd.web.auth import User

HERE = Path(__file__).resolve().parent


@dataclass
class Console:
    """The console's shared state; one per process."""

    config: Config
    store: RedisStore
    clock: Callable[[], datetime] = utcnow
    agent_timeout: float = 30.0
    env: Environment = field(init=False)
    users: UsersStore = field(init=False)
    quarantine: Quarantine = field(init=False)
    records: Records = field(init=False)
    disclosures: Disclosures = field(init=False)
    decisions: Decisions = field(init=False)

    def __post_init__(self) -> None:
        self.users = UsersStore(self.store)
        self.quarantine = Quarantine(self.store, self.config, self.clock)
        self.records = Records(self.store, self.config.records_retention_days)
        self.disclosures = Disclosures(self.store, self.config, self.clock)
        self.decisions = Decisions(self.quarantine, self.users, self.config.web.approvals, self.agent_timeout,
                                   self.clock)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.env.filters["local"] = lambda dt: local_time(dt, self.config.tz)
        self.env.globals["excerpt"] = lambda f, n: mark(f.excerpt, [(n, f)])[0]

    def audit(self, who: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """An audit entry for something seen or done in the console (viewing content counts)."""
        self.store.audit(who, action, target, detail)

    def page(self, request: Request, template: str, user: User | None, status: int = 200,
             **context: Any) -> HTMLResponse:
        """Render a page with what every page needs: the user, their CSRF token, the approvals setting."""
        from regfd.web.auth import csrf_token

        html = self.env.get_template(template).render(
            request=request, user=user, csrf=csrf_token(request), approvals=self.config.web.approvals,
            sso=bool(self.config.web.oidc_issuer),
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)


def console(request: Request) -> Console:
    """The Console of the app serving `request`."""
    c = request.app.state.console
    assert isinstance(c, Console)
    return c
