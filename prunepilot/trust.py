"""Code named by a folder runs only when the user opts in.

A model spec ``pkg.module:callable`` and a data name ``pkg.module:fn`` are import paths:
building them imports a module and calls a function, i.e. runs code. That is fine when the
user typed the spec (``prunepilot prune --model pkg.mod:fn``, a search config they wrote), but
a folder someone else wrote can name any callable (``os:system?command=...``). So specs read
from a folder (a pruned model's ``pruned.json``, a run folder's ``config.yaml``) go through
:func:`require_trusted` first: import paths are refused unless ``trust_code=True``
(``--trust-code`` on the command line). Zoo names, ``torchvision:NAME`` models, the
``testing:NAME`` fixtures (modules of this package) and the built-in datasets are
prunepilot's own code and always allowed (:data:`TRUSTED_SPEC_KINDS`).

Example:
    >>> require_trusted(model="resnet20", data="digits", source="run/config.yaml", trust_code=False)
    >>> require_trusted(model="os:system?command=ls", source="x/pruned.json", trust_code=False)  # doctest: +SKIP
    Traceback (most recent call last):
    UntrustedCodeError: x/pruned.json names the model spec 'os:system?command=ls', an import path: ...
"""

from __future__ import annotations

from prunepilot.data.config import BUILTIN_DATASETS
from prunepilot.errors import UntrustedCodeError, one_of
from prunepilot.models._registry import parse_spec

TRUST_FLAG = "--trust-code"
"""The CLI flag that opts in (``trust_code=True`` in Python)."""

TRUSTED_SPEC_KINDS = ("zoo", "torchvision", "testing")
"""Model spec kinds (:attr:`ParsedSpec.kind <prunepilot.models.ParsedSpec>`) that build only
prunepilot's or torchvision's own code; any other kind (an import path) needs the opt-in."""


def require_trusted(
    *,
    model: str | None = None,
    data: str | None = None,
    source: str,
    trust_code: bool,
    alternative: str = "",
) -> None:
    """Refuse import-path specs read from ``source`` unless ``trust_code``.

    Args:
        model: A model spec read from ``source`` (None: none read).
        data: A data name read from ``source`` (None: none read).
        source: The file the values came from, for the message.
        trust_code: The user's opt-in; True allows everything.
        alternative: Another way out, appended to the message (e.g. "or give --model SPEC").

    Raises:
        UntrustedCodeError: ``model`` or ``data`` is an import path (a spec kind outside
            :data:`TRUSTED_SPEC_KINDS`, a data name outside the built-in datasets) and
            ``trust_code`` is False; the message names the value, the file, the opt-in and what
            needs none.
        ModelSpecError: ``model`` is not a well-formed spec.
    """
    if trust_code:
        return
    named = []
    if model is not None and parse_spec(model).kind not in TRUSTED_SPEC_KINDS:
        named.append(f"the model spec {model!r}")
    if data is not None and data not in BUILTIN_DATASETS:
        named.append(f"the data name {data!r}")
    if not named:
        return
    raise UntrustedCodeError(
        f"{source} names {' and '.join(named)}, an import path: building it would import a module and "
        "call a function that whoever wrote this folder chose, i.e. run their code. Refused (nothing was "
        f"run). If you trust the folder's author, pass {TRUST_FLAG} (Python: trust_code=True). Needing no "
        "opt-in: zoo names (e.g. 'resnet20'), 'torchvision:NAME' models and the datasets "
        f"{one_of(BUILTIN_DATASETS)}{'; ' + alternative if alternative else ''}."
    )
