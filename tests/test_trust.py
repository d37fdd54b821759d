"""Folders are data: an import-path spec read from pruned.json or a run's config.yaml never runs
unless the user opts in (``trust_code=True`` / ``--trust-code``); pruned.json reads only its own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import Result
from typer.testing import CliRunner

from prunepilot import load_pruned
from prunepilot.cli import app
from prunepilot.errors import CheckpointError, UntrustedCodeError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy
from prunepilot.pruning.io import save_pruned
from prunepilot.trust import require_trusted

runner = CliRunner()
SAFE_IMPORT_SPEC = "prunepilot.models.testing:tiny_convnet"


def _attack(marker: Path) -> str:
    """A spec that, if it were ever called, would create ``marker`` (and nothing worse)."""
    return f"os:system?command=touch {marker}"


def _pruned_folder(folder: Path, spec: str = "testing:tiny-convnet") -> Path:
    torch.manual_seed(0)
    model = build_model("testing:tiny-convnet").eval()
    x = torch.zeros(1, 3, 16, 16)
    space = PruningSpace.build(model, x)
    policy = PruningPolicy.uniform(space, 0.5)
    save_pruned(folder, apply_policy(model, policy, x, space=space), policy, spec=spec,
                num_classes=10, in_channels=3, input_shape=(1, 3, 16, 16))  # fmt: skip
    return folder


def _edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "pruned.json").read_text())
    for key, value in changes.items():
        if key == "spec":
            manifest["model"]["spec"] = value
        else:
            manifest[key] = value
    (folder / "pruned.json").write_text(json.dumps(manifest))


def _run_folder(folder: Path, spec: str, data: str = "digits") -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"spec": spec}, "data": {"name": data}}))
    return folder


# --- the rule -----------------------------------------------------------------------------------


def test_require_trusted_allows_our_own_specs_and_refuses_import_paths() -> None:
    # zoo names, torchvision models and the package's own test fixtures (testing:NAME, no import path)
    ours = ("resnet20", "simplecnn?width_mult=0.5", "torchvision:resnet18?zero_init_residual=true")
    for spec in (*ours, "testing:tiny-convnet", "testing:tiny-fragile?fail_width=3"):
        require_trusted(model=spec, data="digits", source="x/config.yaml", trust_code=False)
    with pytest.raises(UntrustedCodeError):  # the same fixture by import path is code the folder names
        require_trusted(model=SAFE_IMPORT_SPEC, source="x/config.yaml", trust_code=False)
    for kwargs in ({"model": "os:system?command=ls"}, {"data": "os:system"}, {"data": "torchvision:foo"}):
        with pytest.raises(UntrustedCodeError) as info:
            require_trusted(source="x/config.yaml", trust_code=False, **kwargs)  # type: ignore[arg-type]
        message = str(info.value)
        assert "x/config.yaml" in message and next(iter(kwargs.values())) in message
        assert "--trust-code" in message and "trust_code=True" in message
        assert "'resnet20'" in message and "torchvision:NAME" in message  # what needs no opt-in
        require_trusted(source="x/config.yaml", trust_code=True, **kwargs)  # type: ignore[arg-type]


# --- pruned.json ---------------------------------------------------------------------------------


def test_load_pruned_refuses_an_import_spec_without_trust_code(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    folder = _pruned_folder(tmp_path / "pruned")
    _edit_manifest(folder, spec=_attack(marker))
    with pytest.raises(UntrustedCodeError) as info:
        load_pruned(folder)
    assert not marker.exists()
    message = str(info.value)
    assert "os:system" in message and "pruned.json" in message and "trust_code=True" in message


def test_load_pruned_with_trust_code_builds_an_import_spec(tmp_path: Path) -> None:
    folder = _pruned_folder(tmp_path / "pruned", spec=SAFE_IMPORT_SPEC)
    with pytest.raises(UntrustedCodeError, match="trust_code"):
        load_pruned(folder)
    model = load_pruned(folder, trust_code=True)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    assert load_pruned(_pruned_folder(tmp_path / "zoo"))(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("key", ["state_dict", "policy"])
@pytest.mark.parametrize("where", ["../outside.pt", "/etc/passwd", "sub/../../outside.pt"])
def test_pruned_json_reads_only_files_inside_its_folder(tmp_path: Path, key: str, where: str) -> None:
    folder = _pruned_folder(tmp_path / "pruned")
    torch.save(torch.load(folder / "model.pt", weights_only=True), tmp_path / "outside.pt")
    _edit_manifest(folder, **{key: where})
    with pytest.raises(CheckpointError) as info:
        load_pruned(folder)
    message = str(info.value)
    assert "points outside the folder" in message and repr(where) in message


def test_pruned_json_with_missing_or_bad_fields_is_refused_not_a_traceback(tmp_path: Path) -> None:
    folder = _pruned_folder(tmp_path / "pruned")
    good = (folder / "pruned.json").read_text()
    cases = [
        ({"model": None}, "'model' must be"),
        ({"input_shape": "1,3,16,16"}, "'input_shape' must be"),
        ({"input_shape": [1, 3, 0, 16]}, "'input_shape' must be"),
        ({"state_dict": 3}, "'state_dict' must name a file"),
        ({"ignored_layers": "features.0"}, "'ignored_layers' must be"),
    ]
    for changes, needle in cases:
        (folder / "pruned.json").write_text(good)
        _edit_manifest(folder, **changes)
        with pytest.raises(CheckpointError, match=needle):
            load_pruned(folder)
    (folder / "pruned.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pruned(folder)


# --- a run folder's config.yaml through `prunepilot prune --run` ----------------------------------


def _prune_run(run: Path, out: Path, *extra: str) -> Result:
    return runner.invoke(app, ["prune", "--run", str(run), "--uniform", "0.5", "--out", str(out), *extra])


def test_prune_run_refuses_an_import_model_spec_without_trust_code(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    run = _run_folder(tmp_path / "run", _attack(marker))
    res = _prune_run(run, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "--trust-code" in res.output and "os:system" in res.output
    assert "config.yaml" in res.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_prune_run_refuses_an_import_data_name_without_trust_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "pp_attack_data.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n\ndef load():\n    raise SystemExit\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _run_folder(tmp_path / "run", "testing:tiny-convnet", data="pp_attack_data:load")
    res = _prune_run(run, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "--trust-code" in res.output and "pp_attack_data:load" in res.output
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the user's own --data replaces the run's: nothing from the folder is called
    res = _prune_run(run, tmp_path / "out", "--data", "digits")
    assert res.exit_code == 0, res.output
    assert not marker.exists()


def test_prune_run_with_trust_code_or_an_explicit_model(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    run = _run_folder(tmp_path / "run", SAFE_IMPORT_SPEC)
    assert _prune_run(run, tmp_path / "a").exit_code == 2
    res = _prune_run(run, tmp_path / "a", "--trust-code")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "pruned.json").read_text())["model"]["spec"] == SAFE_IMPORT_SPEC
    attack = _run_folder(tmp_path / "run2", _attack(marker))
    res = _prune_run(attack, tmp_path / "b", "--model", "testing:tiny-convnet")  # the user's spec replaces the run's
    assert res.exit_code == 0, res.output
    assert not marker.exists()


def test_prune_run_on_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    res = _prune_run(tmp_path / "nope", tmp_path / "out")
    assert res.exit_code == 2 and "not a prunepilot run folder" in res.output
    assert not (tmp_path / "nope").exists()  # looking at a run folder never creates one


def test_search_resume_refuses_an_import_spec_from_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "search"))
    from search_helpers import tiny_config

    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_config(tmp_path, **{"model.spec": _attack(marker)})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["search", "--resume", str(run), "--backend", "local", "--quiet"])
    assert res.exit_code == 2, res.output
    assert "--trust-code" in res.output and "os:system" in res.output and "config.yaml" in res.output
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written into the run
