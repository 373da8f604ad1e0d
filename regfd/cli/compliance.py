"""Placeholder: this command group is being written (see the open issues)."""

from typing import Any


def register(sub: Any) -> None:
    return None
