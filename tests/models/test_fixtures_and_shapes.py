"""Test fixtures live outside the production zoo (``testing:NAME``); default example inputs per spec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prunepilot.errors import ModelSpecError
from prunepilot.models import build_model, default_input_shape, list_models, parse_spec
from prunepilot.models.testing import FIXTURES, TinyConvNet


def test_importing_the_models_package_leaves_the_fixtures_out() -> None:
    code = (
        "import sys, prunepilot, prunepilot.models as m, prunepilot.cli; "
        "assert 'prunepilot.models.testing' not in sys.modules, 'imported at import time'; "
        "assert not [n for n in m.list_models() if 'tiny' in n], m.list_models(); "
        "m.build_model('testing:tiny-convnet'); "
        "assert 'prunepilot.models.testing' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_fixture_builds_by_its_testing_spec_and_none_is_a_zoo_name(name: str) -> None:
    assert name not in list_models()
    kw = {"num_classes": 4, "in_channels": 1} if name == "tiny-known-answer" else {}
    assert build_model(f"testing:{name}", **kw) is not None
    with pytest.raises(ModelSpecError, match="not a zoo model"):
        build_model(name, **kw)


def test_testing_spec_kind_query_and_unknown_name() -> None:
    parsed = parse_spec("testing:tiny-fragile?fail_width=3")
    assert (parsed.kind, parsed.target, parsed.kwargs) == ("testing", "tiny-fragile", {"fail_width": 3})
    assert build_model("testing:tiny-fragile?fail_width=3").fail_width == 3
    assert isinstance(build_model("testing:tiny-convnet", num_classes=3, in_channels=1), TinyConvNet)
    with pytest.raises(ModelSpecError) as info:
        build_model("testing:tiny-nope")
    message = str(info.value)
    assert "'testing:tiny-nope'" in message and "not a test fixture" in message
    for name in FIXTURES:
        assert repr(f"testing:{name}") in message  # the error lists every fixture
    with pytest.raises(ModelSpecError, match="not accepted"):
        build_model("testing:tiny-convnet?width=2")


@pytest.mark.parametrize(
    ("spec", "channels", "expected"),
    [
        ("torchvision:resnet18", 3, (1, 3, 224, 224)),
        ("torchvision:mobilenet_v2?adapt_stem=true", 1, (1, 1, 224, 224)),
        ("resnet20", 3, (1, 3, 32, 32)),
        ("testing:tiny-convnet", 1, (1, 1, 32, 32)),
        ("pkg.mod:build", 3, (1, 3, 32, 32)),
    ],
)
def test_default_input_shape(spec: str, channels: int, expected: tuple[int, ...]) -> None:
    assert default_input_shape(spec, channels) == expected
