"""Every config shipped in configs/ validates (fields, strategy names and settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunepilot.search.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
