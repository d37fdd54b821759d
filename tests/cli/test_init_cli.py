"""`prunepilot init` and the configs shipped inside the package, found from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunepilot.cli import app
from prunepilot.hw_models.devices import load_device, shipped_config_dir
from prunepilot.search.config import load_config


def test_init_writes_a_starter_that_validates_and_never_overwrites(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(tmp_path / "proj")])
    assert result.exit_code == 0, result.output
    target = tmp_path / "proj" / "prunepilot.yaml"
    cfg = load_config(target)
    assert cfg.model.spec == "simplecnn" and cfg.data.name == "digits" and cfg.strategy.name == "random"
    assert "# " in target.read_text()  # commented

    target.write_text("# my own edits\n")
    again = runner.invoke(app, ["init", str(tmp_path / "proj")])
    assert again.exit_code == 2
    assert "already exists" in again.output and "--force" in again.output
    assert target.read_text() == "# my own edits\n"
    forced = runner.invoke(app, ["init", str(tmp_path / "proj"), "--force"])
    assert forced.exit_code == 0 and load_config(target).name == "starter"


def test_init_refuses_a_name_that_is_not_a_yaml_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--name", "../escape.yaml"])
    assert result.exit_code == 2 and "plain file name" in result.output
    assert not (tmp_path.parent / "escape.yaml").exists()


def test_devices_are_found_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./configs/devices here
    monkeypatch.delenv("PRUNEPILOT_DEVICES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    dev = load_device("local-cpu")
    assert Path(dev.source).parent == shipped_config_dir() / "devices"
    assert Path(dev.source).is_relative_to(Path(__file__).resolve().parents[2] / "prunepilot")


def test_a_user_device_shadows_the_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRUNEPILOT_DEVICES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    own = tmp_path / "xdg" / "prunepilot" / "devices"
    own.mkdir(parents=True)
    (own / "local-cpu.yaml").write_text(
        "name: local-cpu\ndescription: mine\nlatency_model: torch-cpu\nsettings: {threads: 2}\n"
    )
    dev = load_device("local-cpu")
    assert dev.description == "mine" and dev.settings["threads"] == 2
