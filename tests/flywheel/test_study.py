"""`lemario study variance` end to end on the tiny preset: world models trained, policies in each, all evaluated
on the same real-emulator episodes, decomposed; a re-run resumes without training anything again."""

import json
from dataclasses import replace

import pytest

from lemario.flywheel.study import PRESETS, _open_study
from lemario.play.variance import COMPONENTS

from conftest import run_cli, run_cli_many


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "corpus"
    r = run_cli("collect", "--preset", "tiny", "--episodes", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_a_tiny_study_end_to_end_and_resumed(corpus, tmp_path):
    out = tmp_path / "study"
    r = run_cli("study", "variance", "--preset", "tiny", "--corpus", str(corpus), "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    v = json.loads((out / "variance.json").read_text())
    assert v["design"] == {"world_models": 2, "policies": 2, "episodes": 3}
    assert [(row["w"], row["policy_seed"]) for row in v["rows"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert set(v["components"]) == set(COMPONENTS)
    for c in v["components"].values():
        lo, hi = c["ci95"]
        assert 0 <= lo <= hi and c["variance"] >= 0
    assert len(v["power_table"]) == 16 and "power of one iteration" in r.stdout
    assert (out / "variance.png").stat().st_size > 0 and v["git_commit"]
    assert sorted(p.name for p in (out / "policies").iterdir()) == ["w0-s1", "w0-s2", "w1-s1", "w1-s2"]
    stamp = (out / "wm" / "s0" / "model.safetensors").stat().st_mtime_ns
    again = run_cli("study", "variance", "--preset", "tiny", "--corpus", str(corpus), "--out", str(out))
    assert again.returncode == 0 and "[study] evaluate" not in again.stdout
    assert (out / "wm" / "s0" / "model.safetensors").stat().st_mtime_ns == stamp
    other = run_cli("study", "variance", "--preset", "tiny", "--k", "3", "--corpus", str(corpus), "--out", str(out))
    assert other.returncode == 2 and "(k: 2 -> 3)" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    # a study of world models trained elsewhere records their own training configs, not its unused --train
    models = tuple(out / "wm" / f"s{w}" / "model.safetensors" for w in (0, 1))
    _open_study(replace(PRESETS["tiny"], corpus=corpus, out=tmp_path / "given", world_models=models))
    config = json.loads((tmp_path / "given" / "config.json").read_text())["config"]
    assert config["train"].startswith("unused") and [r["path"] for r in config["world_model_runs"]] == list(
        map(str, models)
    )
    assert [r["train_config"]["seed"] for r in config["world_model_runs"]] == [0, 1] and config["world_model_runs"][0][
        "step"
    ]


def test_bad_input_is_one_line(corpus, tmp_path):
    import torch

    from lemario.core import checkpoint

    wm = tmp_path / "wm96.safetensors"  # other frames than the env's
    checkpoint.save(wm, {"w": torch.zeros(1)}, {"kind": "world_model", "config": {"image_size": 96}})
    study = ("study", "variance")
    cases = {
        "w": [*study, "--preset", "tiny", "--w", "1", "--corpus", str(corpus), "--out", str(tmp_path / "a")],
        "missing": [*study, "--world-models", str(tmp_path / "no.safetensors"), str(tmp_path / "b")],
        "frames": [*study, "--world-models", str(wm), str(wm), "--corpus", str(corpus), "--out", str(tmp_path / "s")],
    }
    (tmp_path / "logs").mkdir()
    r = run_cli_many(cases, tmp_path / "logs")
    assert r["w"].returncode == 2 and "at least 2 world models" in r["w"].stderr
    assert r["missing"].returncode == 2 and "no world model at" in r["missing"].stderr
    # refused before any policy is trained on them
    assert r["frames"].returncode == 2 and "pass --frame-stack 4 --resize 96" in r["frames"].stderr
    assert not (tmp_path / "s" / "policies").exists()
