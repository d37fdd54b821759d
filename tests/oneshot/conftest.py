"""Fixtures for one-shot tests; helpers live in oneshot_helpers (a uniquely named module)."""

from __future__ import annotations

from oneshot_helpers import _one_thread, zoo

__all__ = ["_one_thread", "zoo"]
