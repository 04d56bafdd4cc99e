"""The progress report: known answers through rollouts that predict what the game gave, the groups' rules, and a
real (untrained) model's report."""

import numpy as np
import pytest
import torch

import lemario.model.progress as progress
from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.ram import LABELS
from lemario.model.taken import TakenRollouts, taken_rollouts
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel

from synthetic import write_corpus

HORIZON = 4


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    # the square is clipped at x = 76: steps pushing right there do not move it, a wall
    return EpisodeBuffer.load(write_corpus(tmp_path_factory.mktemp("progress") / "c", episodes=6, steps=60))


def _realized(buffer: EpisodeBuffer, steps: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon) the progress the game gave over the next transitions of each step, NaN past its episode."""
    last = np.repeat(buffer.starts + buffer.lengths - 1, buffer.lengths)
    ahead = steps[:, None] + np.arange(horizon)
    return np.where(ahead < last[steps][:, None], buffer.rewards[np.minimum(ahead, len(buffer) - 1), 0], np.nan)


def _rollouts(buffer: EpisodeBuffer, frames: np.ndarray, progress_px) -> TakenRollouts:
    """Rollouts from `frames` whose head predicts `progress_px(frames)` (n, HORIZON) px and nothing else."""
    valid = np.isfinite(_realized(buffer, frames, HORIZON))
    ahead = np.zeros((len(frames), HORIZON, 4))
    ahead[..., 0] = np.where(valid, progress_px(frames), 0.0)
    return TakenRollouts(frames, np.zeros((len(frames), 4)), ahead, valid)


def test_rollouts_that_predict_what_the_game_gave_match_everywhere(buffer):
    every = np.arange(len(buffer))
    report = progress.progress_report(buffer, _rollouts(buffer, every, lambda f: _realized(buffer, f, HORIZON)), 16)
    assert report["correlation"] == pytest.approx(1.0)
    rows = list(report["groups"].values()) + report["bins"]
    for r in rows:
        assert r["predicted"] == pytest.approx(r["real"]) and r["predicted_rollout"] == pytest.approx(r["real_rollout"])
    assert sum(r["steps"] for r in report["groups"].values()) == len(buffer) - len(buffer.starts)
    assert sum(b["steps"] for b in report["bins"]) == len(buffer) - len(buffer.starts)
    assert report["groups"]["blocked"]["real"] == 0.0 and report["groups"]["moving_right"]["real"] > 0
    fifty = progress.scored_steps(buffer, max_steps=50)
    assert len(fifty) == 50 and (np.diff(fifty) > 0).all() and np.array_equal(fifty, progress.scored_steps(buffer, 50))
    some = progress.progress_report(buffer, _rollouts(buffer, fifty, lambda f: _realized(buffer, f, HORIZON)))
    assert sum(r["steps"] for r in some["groups"].values()) == 50 and some["correlation"] == pytest.approx(1.0)


def test_blocked_steps_hold_right_while_alive_and_do_not_move(buffer):
    every = np.arange(len(buffer))
    report = progress.progress_report(buffer, _rollouts(buffer, every, lambda f: np.full((len(f), HORIZON), 2.0)), 16)
    f = np.flatnonzero(np.arange(len(buffer)) < np.repeat(buffer.starts + buffer.lengths - 1, buffer.lengths))
    x, a, dx = buffer.labels[f, LABELS.index("x_pos")], buffer.actions[f], buffer.labels[f + 1, 0] - buffer.labels[f, 0]
    blocked = np.isin(a, [1, 2, 3, 4]) & (dx == 0)  # right-only: every action but NOOP holds right; no one dies here
    assert blocked.sum() > 10 and (x[blocked] == 76).sum() > 5, "the synthetic wall is in the corpus"
    assert report["groups"]["blocked"] == {
        "steps": int(blocked.sum()),
        "real": 0.0,
        "predicted": 2.0,
        "real_rollout": pytest.approx(np.nanmean(_realized(buffer, f[blocked], HORIZON))),
        "predicted_rollout": 2.0,
    }
    wall = report["bins"][-1]
    assert wall["x"] == 64 and wall["blocked"]["steps"] == int((blocked & (x >= 64)).sum())
    text = progress.format_progress(report)
    assert "blocked" in text and f"x    64-80    {wall['steps']:>8}" in text


def test_a_real_models_report_on_sampled_steps(buffer, tmp_path):
    torch.manual_seed(0)
    model = WorldModel(PRESETS["tiny"].model)
    steps = progress.scored_steps(buffer, max_steps=40)
    report = progress.progress_report(buffer, taken_rollouts(model, buffer, steps, horizon=HORIZON))
    assert sum(r["steps"] for r in report["groups"].values()) == 40
    assert np.isfinite(report["groups"]["moving_right"]["predicted_rollout"])
