"""Optuna samplers in a form Ray Tune can pickle.

Tune pickles its searcher, and so the sampler inside ``OptunaSearch``, when a Tuner starts and
at every experiment checkpoint (with the standard :mod:`pickle`). Optuna 5's genetic samplers
hold a ``threading.Lock``, which does not pickle. The subclass here drops the lock from the
pickled state and makes a fresh one on unpickling; what it samples is unchanged. Imported only
where a strategy builds its sampler, so importing the strategies does not import Optuna.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """:class:`optuna.samplers.NSGAIISampler` that survives ``pickle`` (its lock is remade)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
