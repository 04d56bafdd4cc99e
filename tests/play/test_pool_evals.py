"""scripts/pool_evals.py: several evaluation folders (sets of eval seeds) pooled per level, agent and method."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("pool_evals", Path(__file__).parents[2] / "scripts" / "pool_evals.py")
pool_evals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pool_evals)


def write_eval(folder: Path, episodes: list[dict], level: str = "1-1") -> Path:
    folder.mkdir(parents=True)
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (folder / "summary.json").write_text(json.dumps({"config": {"env": {"level": level}}}))
    return folder


def ep(agent: str, max_x: int, level: str | None = None, flag: int = 0) -> dict:
    row = {"agent": agent, "max_x": max_x, "final_x": max_x, "flag_get": flag, "steps": 10}
    return {**row, **({"level": level} if level else {})}


def test_sets_and_seeds_pool_to_known_means_and_spreads(tmp_path):
    a, b = "policy:runs/a/policy.safetensors", "policy:runs/b/policy.safetensors"
    set0 = write_eval(
        tmp_path / "o0",
        [ep(a, 100, "1-1"), ep(a, 300, "1-1"), ep(b, 500, "1-1", flag=1), ep(a, 40, "5-1"), ep("biased", 10, "5-1")],
    )
    set1 = write_eval(
        tmp_path / "o1",
        [ep(a, 400, "1-1"), ep(a, 400, "1-1"), ep(b, 700, "1-1"), ep(a, 60, "5-1"), ep("biased", 30, "5-1")],
    )
    table = pool_evals.pool([set0, set1])
    agents = {(r["level"], r["agent"]): r for r in table["agents"]}
    assert agents[("1-1", a)]["set_means"] == [200, 400]  # each folder's mean, and their sd
    assert agents[("1-1", a)]["mean_max_x"] == 300 and agents[("1-1", a)]["sd_sets"] == pytest.approx(141.421, abs=1e-3)
    assert agents[("1-1", b)]["flag_rate"] == 0.5 and agents[("1-1", b)]["episodes"] == 2
    methods = {(r["level"], r["method"]): r for r in table["methods"]}
    assert methods[("1-1", "policy")]["seed_means"] == [300, 600]  # two policies: two seeds of one method
    assert methods[("1-1", "policy")]["mean_of_means"] == 450
    assert methods[("1-1", "policy")]["sd_between_seeds"] == pytest.approx(212.132, abs=1e-3)
    assert (
        methods[("1-1", "policy")]["flag_rate"] == pytest.approx(0.25) and methods[("1-1", "policy")]["best_seed"] == b
    )
    assert methods[("5-1", "biased")]["mean_of_means"] == 20 and methods[("5-1", "biased")]["seeds"] == 1


def test_a_one_level_evaluation_takes_its_level_from_its_config(tmp_path):
    folder = write_eval(tmp_path / "o0", [ep("biased", 700)], level="4-2")
    assert [r["level"] for r in pool_evals.pool([folder])["agents"]] == ["4-2"]


def test_a_folder_without_episodes_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        pool_evals.pool([tmp_path])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().endswith("episodes.jsonl is missing: pass folders written by `lemario eval`")


def test_groups_split_the_policies_of_one_evaluation_into_arms(tmp_path):
    plain, emb = "policy:runs/pi-plain-s1/policy.safetensors", "policy:runs/pi-emb-s1/policy.safetensors"
    folder = write_eval(tmp_path / "o0", [ep(plain, 100), ep(plain, 300), ep(emb, 500), ep("biased", 50)])
    methods = {r["method"]: r for r in pool_evals.pool([folder], {"plain": "pi-plain", "emb": "pi-emb"})["methods"]}
    assert set(methods) == {"plain", "emb", "biased"}
    assert methods["plain"]["seed_means"] == [200] and methods["emb"]["seed_means"] == [500]
