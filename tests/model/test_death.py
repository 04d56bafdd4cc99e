"""Death foresight and calibration: known answers for the AUC and the ECE, and the report's counts."""

import numpy as np
import pytest
import torch

from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.ram import LABELS
from lemario.model.death import (
    auc_interval,
    calibration,
    death_onsets,
    death_report,
    decisions_by_x,
    flag_foresight,
    foresight_by_x,
    format_death,
    matched_auc,
    roc_auc,
)
from lemario.model.progress import progress_report, summary_line
from lemario.model.taken import taken_rollouts, transitions_ahead
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel

from synthetic import write_corpus


def test_roc_auc_known_answers():
    y = np.array([0, 0, 1, 1], bool)
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert roc_auc(np.full(4, 0.3), y) == 0.5, "ties count half"
    assert roc_auc(np.array([0.1, 0.5, 0.5, 0.9]), y) == pytest.approx(0.875)  # 3 wins and a tie of 4 pairs
    assert roc_auc(np.array([0.1, 0.2]), np.array([True, True])) is None
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=300).round(1), rng.random(300) < 0.3
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(s, y) == pytest.approx(brute)


def test_matched_auc_compares_each_death_over_its_own_steps():
    rng = np.random.default_rng(2)
    p, y = rng.random((200, 8)).round(1), rng.random(200) < 0.3
    full = np.full(200, 8)
    assert matched_auc(p, full, y) == pytest.approx(roc_auc(p.max(1), y)), "every rollout whole: the plain AUC"
    reach = np.where(y, rng.integers(1, 9, 200), rng.integers(0, 9, 200))  # (n,) 0-8 steps in the episode
    best = np.maximum.accumulate(p, axis=1)  # brute force: every positive against every negative that has its steps
    wins = []
    for i in np.flatnonzero(y):
        for j in np.flatnonzero(~y & (reach >= reach[i])):
            a, b = best[i, reach[i] - 1], best[j, reach[i] - 1]
            wins.append((a > b) + 0.5 * (a == b))
    assert matched_auc(p, reach, y) == pytest.approx(np.mean(wins))
    # a model whose P(death) only grows along any rollout knows nothing: each death's frames have fewer steps ahead
    growing = np.tile(0.1 * np.arange(1, 9), (4, 1))  # (4, 8)
    reach, dies = np.array([8, 8, 1, 2]), np.array([False, False, True, True])
    assert roc_auc(np.where(np.arange(8) < reach[:, None], growing, 0).max(1), dies) == 0.0, "the bias, unmatched"
    assert matched_auc(growing, reach, dies) == 0.5
    assert matched_auc(growing, np.array([8, 8, 0, 0]), dies) is None, "no step ahead: nothing to score"


def test_auc_interval_resamples_whole_episodes():
    rng = np.random.default_rng(1)
    episode = np.repeat(np.arange(20), 5)  # 20 episodes of 5 frames
    positive = np.tile([False, False, False, True, True], 20) & (episode % 2 == 0)  # half the episodes die
    one = np.ones(100, int)  # one step ahead each
    knows = positive.astype(float)[:, None]
    assert auc_interval(knows, one, positive, episode) == (1.0, 1.0), "a score that knows is perfect"
    scores = (rng.random(100) + 0.3 * positive)[:, None]  # (100, 1)
    lo, hi = auc_interval(scores, one, positive, episode)
    assert lo < roc_auc(scores[:, 0], positive) < hi and hi - lo > 0.1
    many = np.repeat(np.arange(100), 10)  # every frame ten times: more frames, the same 20 episodes
    assert auc_interval(scores[many], one[many], positive[many], episode[many]) == pytest.approx((lo, hi)), (
        "copies of an episode's frames are no new evidence (a frame bootstrap would narrow the interval)"
    )
    assert auc_interval(scores, one, np.zeros(100, bool), episode) is None, "never both classes"


def test_calibration_known_answers():
    y = np.array([0, 1, 0, 1], float)
    assert calibration(np.full(4, 0.5), y)["ece"] == pytest.approx(0.0)
    assert calibration(np.ones(4), np.zeros(4))["ece"] == pytest.approx(1.0)
    cal = calibration(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 0, 1, 0], float))
    assert cal["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)
    assert [b["n"] for b in cal["bins"]] == [2, 2]


def test_death_report_counts_frames_before_each_death(tmp_path):
    buffer = EpisodeBuffer.load(write_corpus(tmp_path / "c", episodes=4, steps=30))
    dying, y = LABELS.index("is_dying"), LABELS.index("y_pos")
    ends = buffer.starts + buffer.lengths - 1
    buffer.labels[ends[0], dying] = 1  # episode 0 ends with an enemy death, episode 1 in a pit, 2 and 3 live on
    buffer.labels[ends[1], dying], buffer.labels[ends[1], y] = 1, -20
    onset, pit = death_onsets(buffer)
    assert onset[buffer.starts[0]] == ends[0] and onset[buffer.starts[2]] == -1 and pit[ends[1]] and not pit[ends[0]]
    torch.manual_seed(0)
    model = WorldModel(PRESETS["tiny"].model)
    taken = taken_rollouts(model, buffer, horizon=8, batch=16)
    report = death_report(buffer, taken, model.cfg.flag_head)
    assert report["frames"] == len(buffer) - 4, "every frame but each episode's last (nothing ahead of it)"
    assert report["positives"] == {"all": 16, "pit": 8, "other": 8}  # the 8 frames before each death
    assert sum(b["positives"] for b in report["by_x"]) == 16 and "where deaths come" in format_death(report)
    buffer.labels[:, LABELS.index("x_pos")] = 3 * (np.arange(len(buffer)) - buffer.episode_start)  # walks right
    fine = death_report(buffer, taken_rollouts(model, buffer, horizon=8, batch=16), model.cfg.flag_head, bin_px=8)
    assert fine["decisions"] and "at each line" in format_death(fine)
    assert [d["x"] for d in fine["decisions"]] == [64, 72, 80], "reached from step 22 (8 before the deaths at 30) on"
    assert all(d["positives"] == 2 and d["episodes"] == 4 for d in fine["decisions"]), "one frame per episode"
    two = np.flatnonzero(np.arange(len(buffer)) < buffer.starts[2])  # the frames of episodes 0 and 1 alone
    part = death_report(buffer, taken_rollouts(model, buffer, two, horizon=8, batch=16), model.cfg.flag_head)
    assert part["frames"] == len(two) - 2 and part["positives"] == report["positives"], "every death is in them"
    assert all(0 <= report["auc"][k] <= 1 for k in ("all", "pit", "other"))
    lo, hi = report["auc_ci"]["all"]
    assert report["episodes"] == 4 and lo <= report["auc"]["all"] <= hi and "episodes resampled" in format_death(report)
    line = summary_line({**progress_report(buffer, taken), "death": report})  # the flywheel's log line
    assert f"AUC {report['auc']['all']:.3f} [{lo:.3f}, {hi:.3f}] (16 frames)" in line
    before = {k: v for k, v in report.items() if k != "auc_ci"}  # a report written before the interval
    assert f"AUC {report['auc']['all']:.3f} (16 frames)" in summary_line(
        {**progress_report(buffer, taken), "death": before}
    )
    assert 0 <= report["calibration"]["ece"] <= 1 and sum(b["n"] for b in report["calibration"]["bins"]) == len(buffer)
    assert report["flag"] == {"positives": 0, "auc": None}, "no flag in this corpus"
    buffer.rewards[ends[2] - 1, 3] = 1.0  # episode 2 touches the flagpole on its last step
    frames = np.arange(len(buffer))
    reach = transitions_ahead(buffer, frames, 8)[1].sum(1)  # (n,)
    flag = flag_foresight(buffer, np.tile(frames[:, None], (1, 8)).astype(float), reach, frames, horizon=8)
    assert flag["positives"] == 8 and 0 < flag["auc"] < 1  # the 8 frames before the touch
    soon = (frames < ends[2]) & (frames >= ends[2] - 8)
    knows = np.tile(soon[:, None], (1, 8)).astype(float)
    assert flag_foresight(buffer, knows, reach, frames, horizon=8)["auc"] == 1.0, "a score that knows is perfect"


def test_foresight_by_place_compares_frames_at_the_same_x():
    x = np.array([10, 20, 30, 300, 310, 320, 330, 600])
    soon = np.array([0, 0, 0, 1, 1, 0, 0, 0], bool)
    scores = np.array([0.9, 0.9, 0.9, 0.5, 0.4, 0.1, 0.45, 0.0])
    rows = foresight_by_x(x, scores[:, None], np.ones(8, int), soon, bin_px=256)  # one step ahead each
    assert [r["x"] for r in rows] == [256], "only bins where a death comes"
    (r,) = rows
    assert (r["frames"], r["positives"]) == (4, 2) and r["auc"] == pytest.approx(0.75)  # 0.4 loses to 0.45
    assert r["p_positive"] == pytest.approx(0.45) and r["p_negative"] == pytest.approx(0.275)


def test_decisions_compare_one_frame_per_episode_at_each_line():
    # three episodes (in time order); episode 0 walks back under the line after reaching it; 1 and 2 die soon after
    # 100, episode 2 already at its first frame; episode 1 never reaches 200
    x = np.array([50, 100, 90, 150, 210, 60, 120, 140, 120, 250])
    episode = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    soon = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0], bool)
    scores = np.array([0.9, 0.2, 0.9, 0.9, 0.9, 0.0, 0.6, 0.0, 0.1, 0.0])
    ground = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], bool)  # at the line: episode 1 on the ground, 0 and 2 in the air
    p, reach = scores[:, None], np.ones(10, int)  # (10, 1): one step ahead each
    rows = decisions_by_x(x, episode, p, reach, soon, line_px=100, ground=ground)
    assert [r["x"] for r in rows] == [100], "line 200: no episode there dies soon"
    (r,) = rows
    assert (r["episodes"], r["positives"]) == (3, 2), "frames 1, 6 and 8: the first at or past x 100 of each"
    assert r["auc"] == pytest.approx(0.5)  # 0.6 beats 0.2, 0.1 loses to it
    assert r["auc_ci"] == (0.0, 1.0), "three episodes: resamples of one pairing or the other"
    assert r["grounded"] == {"dying": 1, "passing": 0}
    assert r["p_positive"] == pytest.approx(0.35) and r["p_negative"] == pytest.approx(0.2)  # frames 6, 8; frame 1
    assert decisions_by_x(x[:5], episode[:5], p[:5], reach[:5], soon[:5], 100, ground[:5]) == []
