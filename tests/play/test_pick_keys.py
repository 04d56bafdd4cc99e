"""scripts/pick_keys.py: the keys that pick the best of K, cross-validated on halves of the evaluation episodes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "pick_keys.py"
spec = importlib.util.spec_from_file_location("pick_keys", SCRIPT)
pick_keys = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pick_keys)


def policy(max_x: list[int], flags: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(max_x, float), np.array(flags, float)


def test_a_sure_flagger_is_picked_by_flags_and_missed_by_max_x():
    """Policy 0 always goes further, policy 1 always takes the flag: on any halving max_x picks 0 (held-out flag rate 0,
    regret 1), flags picks 1; the reward key, at 200 px a flag, picks 1 only if its flag outweighs 0's lead (it
    does here: 2000 + 200 > 2100)."""
    pols = [policy([2100] * 4, [0] * 4), policy([2000] * 4, [1] * 4)]
    r = pick_keys.cross_validate(pols, 20, np.random.default_rng(0))
    assert r["max_x"] == {"flag": 0.0, "max_x": 2100.0, "regret": 1.0}
    assert r["flags"] == r["reward"] == {"flag": 1.0, "max_x": 2000.0, "regret": 0.0}


def test_held_out_halves_are_the_episodes_nothing_picked_on():
    """One episode per half each: policy 0's episodes 3000 / 0 and policy 1's 1000 / 1000. max_x picks 0 when its
    3000 falls in A (held out: 0), 1 otherwise (held out: 1000): 500 on average, where picking 1 always gives 1000."""
    pols = [policy([3000, 0], [0, 0]), policy([1000, 1000], [0, 0])]
    r = pick_keys.cross_validate(pols, 4000, np.random.default_rng(1))
    assert r["max_x"]["max_x"] == pytest.approx(500.0, abs=30.0) and r["max_x"]["regret"] == 0.0


def test_the_script_reads_runs_and_says_when_nothing_flagged(tmp_path):
    run = tmp_path / "run"
    rows = []
    for agent, (xs, fs) in {"policy:a": ([2100] * 6, [0] * 6), "policy:b": ([2000] * 6, [1] * 6)}.items():
        rows += [{"agent": agent, "episode": i, "max_x": x, "flag_get": f} for i, (x, f) in enumerate(zip(xs, fs))]
    (run / "iter001" / "eval").mkdir(parents=True)
    (run / "iter001" / "eval" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, str(SCRIPT), str(run), "--splits", "10"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 iterations with a flag" in r.stdout and "flags - max_x, flag: +1.0000" in r.stdout
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 2 and "no iteration with a flag" in r.stderr
