"""The console's people and sessions in Redis (regfd web).

    web:users           hash    name -> JSON {name, role, hash, totp, created_at, created_by}
    web:session:SHA     string  JSON {user, csrf, at, via}; expires with the session
    web:tokens          hash    SHA of an API token -> JSON {user, client, created_at}
    web:fail:KEY        counter failed sign-ins for one name or client address; expires
    web:approvals       hash    quarantine id -> JSON {by, reason, at}: a release awaiting its second approval
    web:oidc:SHA        string  JSON {nonce, verifier, next}: an OpenID Connect sign-in under way; expires
    web:claims          hash    quarantine id -> JSON {by, at}: who has taken a held message in hand
    web:secret          string  random key for CSRF tokens of proxy-mode users (who have no session)

Session ids and API tokens are stored only as their SHA-256: a copy of
Redis does not hand out sign-ins. Password hashes are Argon2id strings made
by regfd/web/auth.py; this module never sees a password.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from regfd.store.client import dumps, reaching, text

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore


def digest(secret: str) -> str:
    """How a session id or token is keyed: its SHA-256 (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class UsersStore:
    """Users, sessions, API tokens, sign-in failure counters and pending second approvals."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._r = store.r
        self._k = store.k
        self.users_key = store.k("web:users")
        self.tokens_key = store.k("web:tokens")
        self.approvals_key = store.k("web:approvals")

    # ------------------------------------------------------------ users
    def get(self, name: str) -> dict[str, Any] | None:
        """The stored user, None when there is none."""
        with reaching():
            raw = self._r.hget(self.users_key, name)
        return json.loads(raw) if raw else None

    def put(self, user: dict[str, Any], who: str, action: str) -> None:
        """Create or replace a user, audited (the hash itself is left out of the audit entry)."""
        detail = {k: v for k, v in user.items() if k not in ("hash", "totp")}
        with self._store.batch("user change failed, nothing changed") as tx:
            tx.pipe.hset(self.users_key, user["name"], dumps(user))
            self._store.audit_ops(tx, who, action, user["name"], detail)

    def remove(self, name: str, who: str) -> bool:
        """Delete a user and their API tokens, audited; whether there was one."""
        if self.get(name) is None:
            return False
        with reaching():
            tokens = [k for k, v in self._r.hgetall(self.tokens_key).items() if json.loads(v)["user"] == name]
        with self._store.batch("user removal failed, nothing changed") as tx:
            tx.pipe.hdel(self.users_key, name)
            if tokens:
                tx.pipe.hdel(self.tokens_key, *tokens)
            self._store.audit_ops(tx, who, "web.user.remove", name, {})
        return True

    def list(self) -> list[dict[str, Any]]:
        """Every user, by name."""
        with reaching():
            rows = [json.loads(v) for v in self._r.hvals(self.users_key)]
        return sorted(rows, key=lambda u: u["name"])

    # ------------------------------------------------------------ sessions
    def session_put(self, sid: str, session: dict[str, Any], ttl: int) -> None:
        """Store a session under the digest of its id for `ttl` seconds."""
        with reaching():
            self._r.set(self._k(f"web:session:{digest(sid)}"), dumps(session), ex=max(1, ttl))

    def session_get(self, sid: str) -> dict[str, Any] | None:
        """The live session for this id, None when it has ended or never was."""
        with reaching():
            raw = self._r.get(self._k(f"web:session:{digest(sid)}"))
        return json.loads(raw) if raw else None

    def session_end(self, sid: str) -> None:
        """Sign out: the id stops working at once."""
        with reaching():
            self._r.delete(self._k(f"web:session:{digest(sid)}"))

    def secret(self) -> bytes:
        """A random key made once per store (web:secret), for tokens derived rather than stored."""
        import secrets

        k = self._k("web:secret")
        with reaching():
            self._r.set(k, secrets.token_hex(32), nx=True)
            raw = self._r.get(k)
        return text(raw).encode() if raw else b""

    # ------------------------------------------------------------ OpenID Connect sign-ins under way
    def oidc_put(self, state: str, data: dict[str, Any], ttl: int) -> None:
        """Remember a sign-in sent to the identity provider (nonce, PKCE verifier) for `ttl` seconds."""
        with reaching():
            self._r.set(self._k(f"web:oidc:{digest(state)}"), dumps(data), ex=max(1, ttl))

    def oidc_take(self, state: str) -> dict[str, Any] | None:
        """The sign-in for `state`, once (GETDEL): a replayed callback finds nothing."""
        with reaching():
            raw = self._r.getdel(self._k(f"web:oidc:{digest(state)}"))
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------ API tokens
    def token_add(self, token: str, user: str, client: str, at: str, who: str) -> None:
        """Register a bearer token for `user` (only its digest is kept), audited."""
        with self._store.batch("token creation failed, nothing changed") as tx:
            tx.pipe.hset(self.tokens_key, digest(token), dumps({"user": user, "client": client, "created_at": at}))
            self._store.audit_ops(tx, who, "web.token.add", user, {"client": client})

    def token_get(self, token: str) -> dict[str, Any] | None:
        """Who a bearer token belongs to, None when it is unknown."""
        with reaching():
            raw = self._r.hget(self.tokens_key, digest(token))
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------ sign-in rate limiting
    def failures(self, key: str) -> int:
        """Failed sign-ins counted for `key` (a name or an address) in the current window."""
        with reaching():
            raw = self._r.get(self._k(f"web:fail:{key}"))
        return int(text(raw)) if raw else 0

    def failed(self, key: str, window: int) -> None:
        """Count one failure for `key`; the count lapses `window` seconds after the first."""
        k = self._k(f"web:fail:{key}")
        with reaching():
            pipe = self._r.pipeline(transaction=True)
            pipe.incr(k)
            pipe.expire(k, max(1, window), nx=True)
            pipe.execute()

    def clear_failures(self, key: str) -> None:
        """A successful sign-in clears the name's count."""
        with reaching():
            self._r.delete(self._k(f"web:fail:{key}"))

    # ------------------------------------------------------------ who has a held message in hand
    def claim(self, qid: str, claim: dict[str, Any] | None, who: str) -> None:
        """Set (or, with None, clear) the claim on `qid`, audited."""
        with self._store.batch("claim failed, nothing changed") as tx:
            if claim is None:
                tx.pipe.hdel(self._k("web:claims"), qid)
            else:
                tx.pipe.hset(self._k("web:claims"), qid, dumps(claim))
            self._store.audit_ops(tx, who, "web.claim" if claim else "web.unclaim", qid, claim or {})

    def claims(self) -> dict[str, dict[str, Any]]:
        """Every claim, by quarantine id."""
        with reaching():
            rows = self._r.hgetall(self._k("web:claims"))
        return {text(k): json.loads(v) for k, v in rows.items()}

    # ------------------------------------------------------------ two-person rule
    def approval_request(self, qid: str, request: dict[str, Any], who: str) -> bool:
        """Record a release awaiting a second approval (audited); False when one is already waiting."""
        with reaching():
            if not self._r.hsetnx(self.approvals_key, qid, dumps(request)):
                return False
        self._store.audit(who, "web.release.requested", qid, request)
        return True

    def approval_get(self, qid: str) -> dict[str, Any] | None:
        """The release waiting for a second approval on `qid`, if any."""
        with reaching():
            raw = self._r.hget(self.approvals_key, qid)
        return json.loads(raw) if raw else None

    def approval_take(self, qid: str) -> dict[str, Any] | None:
        """Remove and return the waiting request atomically: two approvers racing, only one gets it."""
        with reaching():
            pipe = self._r.pipeline(transaction=True)
            pipe.hget(self.approvals_key, qid)
            pipe.hdel(self.approvals_key, qid)
            raw, removed = pipe.execute()
        return json.loads(raw) if raw and removed else None

    def approval_restore(self, qid: str, request: dict[str, Any]) -> None:
        """Put a taken request back (the release failed before reaching the MTA)."""
        with reaching():
            self._r.hset(self.approvals_key, qid, dumps(request))

    def approvals(self) -> dict[str, dict[str, Any]]:
        """Every release awaiting a second approval, by quarantine id."""
        with reaching():
            rows = self._r.hgetall(self.approvals_key)
        return {text(k): json.loads(v) for k, v in rows.items()}
