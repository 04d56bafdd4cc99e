"""`lemario baseline summary`: milestones over seeds and the learning-curve figure, from run folders made here."""

import numpy as np
import pytest

from lemario.baselines.summary import SummaryConfig, build, milestone_row, rolling_median
from lemario.core.errors import LemarioError

from conftest import run_cli
from synthetic import fake_ppo_run


def test_milestone_row_and_rolling_median():
    assert milestone_row("700", [1000, 3000, 2000]) == ["700", "1,000", "3,000", "2,000", "2,000 ± 1,000"]
    assert milestone_row("flag", [None, 5000]) == ["flag", "-", "5,000", "1 of 2 seeds"]
    assert np.array_equal(rolling_median(np.array([1.0, 9.0, 2.0, 8.0]), 2), [1.0, 5.0, 5.5, 5.0])


def test_summary_of_two_seeds(tmp_path):
    fake_ppo_run(tmp_path / "s0", 0, {"700": 800, "1500": 9000}, {"700": 50_000}, [(50_000, 880.0), (100_000, 1100.0)])
    fake_ppo_run(tmp_path / "s1", 1, {"700": 1200}, {"700": 100_000}, [(50_000, 650.0), (100_000, 760.0)])
    out = tmp_path / "summary"
    r = run_cli(
        "baseline", "summary", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out), "--reference", "612"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    md = (out / "summary.md").read_text()
    assert (out / "curve.png").stat().st_size > 10_000
    assert "| 0 | 200,000 | 2.00 | 27.8 | 800 / 9,000 / - / - | 50,000 / - / - / - | 1100 |" in md
    assert "| 700 | 800 | 1,200 | 1,000 ± 283 |" in md and "| 1500 | 9,000 | - | 1 of 2 seeds |" in md
    assert "| 700 | 50,000 | 100,000 | 75,000 ± 35,355 |" in md
    assert "| 100,000 | 1100 [1000, 1200] / 0.00 | 760 [660, 860] / 0.00 |" in md


def test_summary_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(LemarioError, match="is not a PPO run folder"):
        build(SummaryConfig(runs=(tmp_path,), out=tmp_path / "o"))
