"""``--input-shape`` is parsed whole or refused: ``1,3,x`` never becomes ``(1, 3)`` (issue 19)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from prunepilot.cli import app
from prunepilot.cli.common import parse_shape
from prunepilot.errors import ConfigError


@pytest.mark.parametrize(
    "text,shape",
    [("1,3,32,32", (1, 3, 32, 32)), ("1x3x32x32", (1, 3, 32, 32)), (" 1, 3, 8, 8 ", (1, 3, 8, 8)), ("4,10", (4, 10))],
)
def test_shapes_are_parsed(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    "text,why",
    [
        ("1,3,x", "'x' is not a positive integer"),
        ("1,3,,32", "'' is not a positive integer"),
        ("1,3,32,32,", "'' is not a positive integer"),
        ("1,0,32,32", "'0' is not a positive integer"),
        ("1,-3,32,32", "'-3' is not a positive integer"),
        ("1,3,3.5,3", "'3.5' is not a positive integer"),
        ("1,3x32", "'3x32' is not a positive integer"),
        ("8", "a shape needs at least 2 sizes"),
    ],
)
def test_bad_shapes_are_refused_naming_the_part(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_shape(text, flag="--input-shape")
    assert str(err.value) == (
        f"--input-shape {text!r} is not a shape ({why}); give positive integer sizes like 1,3,32,32 (N,C,H,W)"
    )


def test_prune_refuses_a_bad_shape_before_building_the_model(tmp_path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["prune", "--model", "resnet20", "--input-shape", "1,3,x", "--uniform", "0.5", "--out", str(out)]
    )
    assert res.exit_code == 2, res.output
    assert "'1,3,x' is not a shape ('x' is not a positive integer)" in " ".join(res.output.split())
    assert "Traceback" not in res.output and not out.exists()


def test_errors_print_brackets_as_written() -> None:
    import typer

    from prunepilot.cli.common import err_console, fail_on_error
    from prunepilot.errors import ConfigError

    with err_console.capture() as captured:
        try:
            with fail_on_error():
                raise ConfigError("field 'x': value [g] is not accepted; use [bold] or [/]")
        except typer.Exit as exit_:
            assert exit_.exit_code == 2
    assert "value [g] is not accepted; use [bold] or [/]" in captured.get()
