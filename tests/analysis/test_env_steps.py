"""`lemario compare`: milestones and the equal-steps table against hand computations on runs made here (the
flywheel side on a real tiny run: tests/flywheel/test_flywheel.py)."""

from pathlib import Path

import numpy as np
import pytest

from lemario.analysis.env_steps import CompareConfig, Curve, at_env_steps, build
from lemario.core.errors import LemarioError

from conftest import run_cli
from synthetic import fake_ppo_run


def _curve(steps, means, flags) -> Curve:
    mean = np.array(means, dtype=np.float64)
    return Curve("PPO", "PPO", "c", np.array(steps), mean, mean - 1, mean + 1, np.array(flags, dtype=np.float64))


def test_milestones_are_the_first_evaluation_past_each_mark():
    c = _curve([10, 20, 30, 40], [650, 1600, 1400, 2100], [0.0, 0.2, 0.5, 0.4])
    assert c.first_reached() == {"700": 20, "1500": 20, "2000": 40, "flag": 30}, "700 at 20 (1600); the flag at 0.5"
    c = _curve([10, 20], [800, 900], [0.0, 0.0])
    assert c.first_reached() == {"700": 10} and c.first_reached((300, 850)) == {"300": 10, "850": 20}


def test_interpolation_between_evaluations_and_none_outside():
    c = _curve([50_000, 100_000], [800, 1100], [0, 0])
    assert at_env_steps(c, 80_000) == pytest.approx(800 + 0.6 * 300)
    assert at_env_steps(c, 50_000) == 800 and at_env_steps(c, 100_000) == 1100
    assert at_env_steps(c, 49_999) is None and at_env_steps(c, 100_001) is None


def test_ppo_runs_over_seeds(tmp_path):
    fake_ppo_run(tmp_path / "s0", 0, {}, {}, [(50_000, 880.0), (100_000, 1600.0, 0.5)])
    fake_ppo_run(tmp_path / "s1", 1, {}, {}, [(50_000, 650.0), (100_000, 760.0)])
    out = tmp_path / "cmp"
    r = run_cli("compare", "--ppo", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    md = (out / "compare.md").read_text()
    assert "| s0 (seed 0) | PPO | 2 | 100,000 | 50,000 / 100,000 / - / 100,000 |" in md
    assert "| 700 | 50,000 | 100,000 | 75,000 ± 35,355 |" in md and "| flag | 100,000 | - | 1 of 2 seeds |" in md
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arms_pool_their_runs_and_report_their_ratio_to_the_first(tmp_path):
    fake_ppo_run(tmp_path / "a0", 0, {}, {}, [(0, 100.0), (1000, 200.0), (2000, 300.0)])  # >= 150 at 1000, 250 at 2000
    fake_ppo_run(tmp_path / "a1", 1, {}, {}, [(0, 100.0), (3000, 200.0), (4000, 300.0)])  # 3000, 4000
    fake_ppo_run(tmp_path / "b0", 0, {}, {}, [(0, 100.0), (500, 200.0), (9000, 240.0)])  # 500, never
    args = [f"scratch={tmp_path / 'a0'}", f"scratch={tmp_path / 'a1'}", f"tuned={tmp_path / 'b0'}"]
    md = build(CompareConfig(ppo=tuple(map(Path, args)), marks=(150, 250), out=tmp_path / "cmp"))
    assert "\nscratch:\n" in md and "\ntuned:\n" in md and "| 150 | 1,000 | 3,000 | 2,000 ± 1,414 |" in md
    assert "| 150 | 500 | 500 (one seed) |" in md, "a one-run arm shows its own figure, no spread"
    assert "| first at | scratch | tuned | tuned ÷ scratch |" in md
    assert "| 150 | 2,000 | 500 | 0.25 |" in md and "| 250 | 3,000 | - | - |" in md and "| flag | - | - | - |" in md
    r = run_cli("compare", "--ppo", f"={tmp_path / 'a0'}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "write ARM=FOLDER" in r.stderr


def test_no_runs_or_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(LemarioError, match="no run folders given"):
        build(CompareConfig(out=tmp_path / "o"))
    r = run_cli("compare", "--flywheel", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no finished flywheel iteration" in r.stderr
    r = run_cli("compare", "--ppo", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "is not a PPO run folder" in r.stderr
    r = run_cli("compare", "--ppo", str(tmp_path), "--marks", "500", "0", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--marks 500 0: give positive x" in r.stderr
