"""Evaluator.recalibrated_accuracy: BN recalibration alone, whatever the search's scoring protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import tiny_config

from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator
from prunepilot.training import evaluate_accuracy


def test_recalibrated_accuracy_is_bn_recal_under_any_protocol(tmp_path: Path) -> None:
    bn = Evaluator(validate_config(tiny_config(tmp_path, **{"evaluation.protocol": "bn-recal"})))
    sf_cfg = tiny_config(
        tmp_path, **{"evaluation.protocol": "short-finetune", "evaluation.protocol_settings": {"steps": 3}}
    )
    sf = Evaluator(validate_config(sf_cfg), base_state=bn.model.state_dict())
    policy = bn.make_policy([0.5] * len(bn.space.groups))
    truth = evaluate_accuracy(bn.prune(policy), bn.val)  # prune, recalibrate, score: nothing trained
    assert bn.recalibrated_accuracy(policy) == pytest.approx(truth, abs=1e-6)
    assert bn.evaluate(policy).accuracy == pytest.approx(truth, abs=1e-6)
    assert sf.recalibrated_accuracy(policy) == pytest.approx(truth, abs=1e-6)
    assert sf.evaluate(policy).accuracy != pytest.approx(truth, abs=1e-6)  # the protocol trains: another figure
    # the default (auto: head-refit here) scores on the sliced copy; its refit never leaks into this figure
    head = Evaluator(validate_config(tiny_config(tmp_path)), base_state=bn.model.state_dict())
    assert head.protocol.name == "head-refit" and head.scoring_path == "slice"
    assert head.evaluate(policy).accuracy != pytest.approx(truth, abs=1e-6)
    assert head.recalibrated_accuracy(policy) == pytest.approx(truth, abs=1e-6)
