"""The action table by place counts each step at the x it was chosen on, by origin, in the largest action set."""

import numpy as np
import pytest

from lemario.core.errors import LemarioError
from lemario.data.corpus import write_episode
from lemario.data.coverage import action_coverage, format_coverage
from lemario.games.mario.ram import LABELS

from synthetic import make_episode

X = LABELS.index("x_pos")


def _episode(xs, actions, **meta):
    ep = make_episode(np.random.default_rng(0), steps=len(actions))
    ep.labels[:, X] = xs
    ep.actions[:] = actions
    ep.meta.update(meta)
    return ep


def test_steps_are_counted_at_the_x_they_were_taken_by_origin(tmp_path):
    # spawn: actions 1, 1, 4 at x 0, 150, 250 (the last frame's x 390 takes no action)
    write_episode(tmp_path / "a.h5", _episode([0, 150, 250, 390], [1, 1, 4]))
    # restored from a cell, complex set: action 11 ('up') at x 420, 2 at 199
    (tmp_path / "explore").mkdir()
    write_episode(tmp_path / "explore" / "b.h5", _episode([420, 199, 0], [11, 2], start="cell:3", action_set="complex"))
    cov = action_coverage(tmp_path, bin_px=200)
    assert len(cov.actions) == 12 and cov.actions[:5] == ("noop", "right", "right+A", "right+B", "right+A+B")
    spawn, restored = cov.counts["spawn"], cov.counts["restored"]
    assert spawn.shape == restored.shape == (3, 12)
    assert spawn[0, 1] == 2 and spawn[1, 4] == 1 and spawn.sum() == 3
    assert restored[2, 11] == 1 and restored[0, 2] == 1 and restored.sum() == 2
    table = format_coverage(cov).splitlines()
    assert table[2].split()[:4] == ["0-199", "3", "33%", "0%"]  # 3 steps, 1 restored; noop 0%
    assert table[2].split()[4:6] == ["67%", "33%"]  # right 2 of 3, right+A 1 of 3
    assert table[-1].split()[:3] == ["all", "5", "40%"]
    write_episode(tmp_path / "c.h5", _episode([10, 20], [3], level="1-2"))
    assert action_coverage(tmp_path, level="1-2").counts["spawn"].tolist() == [[0, 0, 0, 1, 0]]
    assert action_coverage(tmp_path).total().sum() == 6


def test_a_corpus_without_mario_episodes_is_refused(tmp_path):
    with pytest.raises(LemarioError, match="no Mario episode"):
        action_coverage(tmp_path)
    write_episode(tmp_path / "a.h5", _episode([0, 1], [1]))
    with pytest.raises(LemarioError, match="no Mario episode on level 4-1"):
        action_coverage(tmp_path, level="4-1")
    with pytest.raises(LemarioError, match="bin width"):
        action_coverage(tmp_path, bin_px=0)
