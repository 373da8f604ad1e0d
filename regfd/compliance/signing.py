"""The register's Ed25519 key: generated once, kept private (0600), its public half exported to auditors.

A signed checkpoint is `{"payload": ..., "signature": base64, "key": key id}`
where the signature covers the payload's canonical JSON (core/chain.py), so
any holder of the exported public key can check it without regfd. The key
id (the first 16 hex digits of SHA-256 over the raw public key) only says
which key signed; it proves nothing by itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from regfd.core.chain import canonical
from regfd.errors import InvalidInput, RegfdError


def generate(path: Path) -> Ed25519PrivateKey:
    """Write a new private key to `path` (PEM, mode 0600, created exclusively: an existing key is never replaced)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(f"{path} already exists: a signing key is never replaced (move it away first; "
                           "checkpoints it signed stay verifiable with its exported public key)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # whatever the umask
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path`; a missing or foreign file is one clear error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RegfdError(f"no signing key at {path}: create one with `regfd records keygen`") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise RegfdError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RegfdError(f"{path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key as `regfd records export-key` prints it (PEM)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), what auditors keep."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """Which key signed: 16 hex digits of SHA-256 over the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The signed form of `payload`."""
    signature = key.sign(canonical(payload))
    return {"payload": dict(payload), "signature": base64.b64encode(signature).decode(),
            "key": key_id(key.public_key())}


def signature_ok(key: Ed25519PublicKey, signed: Mapping[str, Any]) -> bool:
    """Whether `signed["signature"]` is `key`'s signature over the payload's canonical JSON."""
    try:
        key.verify(base64.b64decode(signed.get("signature", ""), validate=True), canonical(signed.get("payload")))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
