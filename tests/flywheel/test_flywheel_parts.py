"""The flywheel's pure parts: the improvement detector on constructed score sets, the stratified replay caps, the
report's biased-random reference."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.data.corpus import EXPLORE_RUN, write_episode
from lemario.data.replay import ReplayConfig, select
from lemario.data.tiers import Tier, audit
from lemario.flywheel import hof
from lemario.flywheel.detector import DetectorConfig, IterationScore, decide, rank_key, replay
from lemario.flywheel.report import biased_references
from lemario.play.stats import t_as_z

from conftest import run_cli
from synthetic import make_episode


def it(i, mean, sd, k=4, decision="", w=1):
    return IterationScore(i, mean, sd, k, verdict=decision, world_models=w)


SEEDS = DetectorConfig(rule="seeds", metric="max_x", threshold=1.0)  # before issue 19: the gain in pooled seed sds
MAX_X = DetectorConfig(rule="components", metric="max_x")  # sessions 19-52: t read as z, on max_x alone


def test_first_iteration_commits():
    d = decide([], it(1, 650, 90))
    assert d.verdict == "commit" and d.best_mean is None


def test_commit_when_the_gain_beats_the_measured_noise():
    history = [it(1, 700, 100, decision="commit")]
    d = decide(history, it(2, 850, 80), SEEDS)
    assert d.verdict == "commit"
    assert d.pooled_sd == pytest.approx(math.sqrt((100**2 + 80**2) / 2)) and d.z == pytest.approx(150 / d.pooled_sd)


def test_a_gain_inside_the_seeds_noise_branches():
    # +80 looks like progress, but with the seed's between-seed sd of 99 it is under one sd
    history = [it(1, 780, 99, decision="commit")]
    d = decide(history, it(2, 860, 99), SEEDS)
    assert d.verdict == "branch" and d.z == pytest.approx(80 / 99)
    assert d.flip == "exploration" and d.best_iteration == 1


def test_threshold_follows_the_measured_sd_not_a_constant():
    history = [it(1, 700, 10, decision="commit")]
    assert decide(history, it(2, 730, 10), SEEDS).verdict == "commit", "+30 is 3 sd when the seeds agree"
    history = [it(1, 700, 200, decision="commit")]
    assert decide(history, it(2, 730, 200), SEEDS).verdict == "branch", "+30 is noise when they do not"


def test_halt_after_patience_runs_out():
    history = [it(1, 800, 50, decision="commit"), it(2, 790, 50, decision="branch"), it(3, 760, 60, decision="branch")]
    d = decide(history, it(4, 805, 50), SEEDS)
    assert d.verdict == "halt" and "3 iterations" in d.reason
    assert decide(history[:2], it(3, 760, 60), SEEDS).flip == "entropy", "branches flip a different variable in turn"


def test_components_rule_counts_the_world_models_training_noise():
    """A fluke of one world-model seed: +90 over the best with policies that agree (sd 40, K 3) is 2.2 pooled sds,
    a commit by the seeds rule; with a measured world-model sd of 80 it is 0.76 standard errors, a branch. A real
    gain of +300 commits under both."""
    history = [it(1, 700, 40, k=3, decision="commit")]
    fluke, real = it(2, 790, 40, k=3), it(2, 1000, 40, k=3)
    assert decide(history, fluke, SEEDS).verdict == "commit"
    d = decide(history, fluke, replace(MAX_X, world_model_sd=80.0))
    se = math.sqrt(80.0**2 + 40.0**2 / 3)
    assert d.verdict == "branch" and d.rule == "components" and d.threshold == 1.645
    assert d.se == pytest.approx(se) and d.best_se == pytest.approx(se) and d.z == pytest.approx(90 / (se * 2**0.5))
    assert decide(history, real, replace(MAX_X, world_model_sd=80.0)).verdict == "commit"
    unmeasured = decide(history, fluke, MAX_X)  # no study: the policy noise alone, and the decision says so
    assert unmeasured.world_model_var is None and "no world-model variance measured" in unmeasured.reason
    assert unmeasured.z == pytest.approx(90 / math.sqrt(2 * 40.0**2 / 3))


def test_a_commit_on_the_estimate_states_its_z_at_the_world_model_components_top(tmp_path):
    """A 3-world-model study can estimate the component at 0 with an interval to sd 387 (the residual preset's): +300
    over the best with policy sd 200, K 3 commits on the estimate (z 1.84) and says that at the top it would be 0.53;
    the verdict is the estimate's."""
    study = tmp_path / "variance.json"
    study.write_text(json.dumps({"components": {"world_model": {"variance": 0.0, "ci95": [0.0, 387.0**2]}}}))
    history = [it(1, 1000, 200, k=3, decision="commit")]
    d = decide(history, it(2, 1300, 200, k=3), replace(MAX_X, variance=study))
    se, se_high = 200 / math.sqrt(3), math.sqrt(387.0**2 + 200.0**2 / 3)
    assert d.verdict == "commit" and d.z == pytest.approx(300 / (se * 2**0.5))
    assert d.z_high == pytest.approx(300 / (se_high * 2**0.5)) and d.world_model_var_high == 387.0**2
    assert f"{d.z_high:.2f} at the world-model component's 95% top (sd 387)" in d.reason
    assert decide(history, it(2, 1300, 200, k=3), replace(MAX_X, world_model_sd=0.0)).z_high is None


def test_more_world_models_per_iteration_shrink_the_standard_error():
    assert it(1, 0, 40, k=3, w=3).se(80.0**2) == pytest.approx(math.sqrt(80.0**2 / 3 + 40.0**2 / 9))
    with pytest.raises(LemarioError, match="unknown detector rule"):
        decide([], it(1, 700, 40), DetectorConfig(rule="vibes"))


def test_needs_k_at_least_2():
    with pytest.raises(ValueError, match="K >= 2"):
        decide([], it(1, 700, float("nan"), k=1))


def row(i, max_x, steps, flag=0):
    return {"file": f"ep{i:04d}", "max_x": max_x, "n_steps": steps, "flag_get": flag}


def test_replay_caps_the_stuck_tier_share_of_frames():
    rows = [row(i, 650, 999) for i in range(20)] + [row(100 + i, 900, 199) for i in range(20)] + [row(200, 1600, 299)]
    chosen = select(rows, ReplayConfig())
    table = {r["tier"]: r for r in audit(chosen)}
    assert table["stuck 200-700"]["share"] <= 0.30 + 1e-9
    assert table["stuck 200-700"]["episodes"] > 0, "the cap trims the tier, it does not empty it"
    kept_stuck = [r["file"] for r in chosen if r["max_x"] == 650]
    assert kept_stuck == [f"ep{i:04d}" for i in range(20 - len(kept_stuck), 20)], "the newest stuck trajectories stay"
    assert table["mid 700-1500"]["episodes"] == 20 and table["elite >=1500"]["episodes"] == 1


def test_a_corpus_of_only_the_capped_tier_is_kept_whole():
    rows = [row(i, 650, 99) for i in range(5)]
    assert select(rows, ReplayConfig()) == rows
    rows.append(row(9, 100, 99))  # one dead trajectory: now the cap binds (100 frames of others -> 42 stuck frames)
    assert [r["file"] for r in select(rows, ReplayConfig())] == ["ep0009"]


def test_equal_means_with_noiseless_seeds_are_no_improvement():
    d = decide([it(1, 700, 0, decision="commit")], it(2, 700, 0), SEEDS)
    assert d.verdict == "branch" and d.z == 0.0
    assert decide([it(1, 700, 0, decision="commit")], it(2, 701, 0), SEEDS).verdict == "commit"


def test_replay_capacity_keeps_the_elite():
    rows = [row(0, 2000, 500)] + [row(i, 900, 100) for i in range(1, 30)] + [row(99, 100, 10, flag=1)]
    chosen = select(
        rows, ReplayConfig(capacity=10, tiers=(Tier("low", 0, 1500), Tier("elite", 1500, None, protected=True)))
    )
    files = [r["file"] for r in chosen]
    assert "ep0000" in files and "ep0099" in files, "elite and flag episodes are never evicted"
    assert len(files) == 12 and files[1:-1] == [f"ep{i:04d}" for i in range(20, 30)], "otherwise the newest 10"


def test_several_levels_are_selected_level_by_level():
    """Each level gets an equal share of the capacity and its own tier caps: a level with few episodes keeps them
    all, however many the other has, and a stuck tier on one level is capped by that level's mix alone."""
    many = [{**row(i, 900, 100), "level": "1-1"} for i in range(30)]
    few = [{**row(100 + i, 900, 100), "level": "4-1"} for i in range(3)]
    chosen = select(many + few, ReplayConfig(capacity=10, tiers=(Tier("low", 0, 1500),)))
    files = [r["file"] for r in chosen]
    assert files == [f"ep{i:04d}" for i in range(25, 30)] + ["ep0100", "ep0101", "ep0102"], "5 each, newest first"
    assert select(many, ReplayConfig(capacity=10, tiers=(Tier("low", 0, 1500),))) == many[-10:], "one level: as before"
    stuck = [{**row(200 + i, 650, 999), "level": "4-1"} for i in range(5)]
    chosen = select(many[:3] + stuck, ReplayConfig())
    assert [r["file"] for r in chosen] == [r["file"] for r in many[:3] + stuck], (
        "4-1 holds only its stuck tier: kept whole, not capped by 1-1's frames"
    )


def test_the_tier_caps_are_for_the_level_their_x_was_drawn_on():
    """1-1's stuck tier (max_x 200-700) is most of a castle level's episodes: on another level, alone or beside 1-1,
    nothing is capped (capacity and protection still hold); an episode with no level is 1-1's."""
    mix = [row(i, 350, 300) for i in range(20)] + [row(100 + i, 150, 60) for i in range(3)]  # stuck, a few dead
    capped = select(mix, ReplayConfig())
    assert len(capped) < 6 and {r["file"] for r in mix[-3:]} <= {r["file"] for r in capped}
    assert select([{**r, "level": "1-1"} for r in mix], ReplayConfig()) == [{**r, "level": "1-1"} for r in capped]
    castle = [{**r, "level": "1-4"} for r in mix]
    assert select(castle, ReplayConfig()) == castle
    both = [{**r, "level": "1-1"} for r in mix] + castle
    chosen = select(both, ReplayConfig())
    assert sum(r["level"] == "1-4" for r in chosen) == len(castle) and sum(r["level"] == "1-1" for r in chosen) < 6
    assert len(select(castle, ReplayConfig(capacity=4))) == 4, "the capacity still holds"


# ---- hall of fame ----------------------------------------------------------------------------------------------


def _artifacts(tmp, i, mean, mx, flags=0.0):
    import torch

    checkpoint.save(tmp / f"wm{i}.safetensors", {"w": torch.ones(2) * i}, {"kind": "world_model"})
    checkpoint.save(tmp / f"pi{i}.safetensors", {"w": torch.ones(2) * i}, {"kind": "policy"})
    ev = tmp / f"ev{i}"
    ev.mkdir()
    agg = {"mean_max_x": mean, "max_max_x": mx, "flag_rate": flags, "ci95_low": mean - 50, "ci95_high": mean + 50}
    agg |= {"episodes": 30}
    (ev / "summary.json").write_text(json.dumps({"per_agent": {"policy:x": agg}}))
    (ev / "episodes.jsonl").write_text("{}\n")
    return tmp / f"wm{i}.safetensors", tmp / f"pi{i}.safetensors", ev


def _hof_run(run, metric):
    """A run folder whose config names its detector metric (what `lemario hof list` says it ranks by)."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_key": {"detector": {"rule": "welch", "metric": metric}}}))
    return run


def test_hall_of_fame_copies_ranks_and_never_overwrites(tmp_path):
    run = _hof_run(tmp_path / "run", "max_x")
    for i, mean in [(1, 650.0), (2, 820.0), (3, 700.0)]:
        wm, pi, ev = _artifacts(tmp_path, i, mean, mean + 400, flags=0.1 if i == 3 else 0.0)
        hof.add(run, i, wm, pi, ev, {"seeds": [i * 1000 + 1]}, "max_x")
    assert [e["iteration"] for e in hof.catalog(run)] == [2, 3, 1]
    best = hof.top(run)[0]
    assert best["name"] == "iter2_meanx820_maxx1220"
    entry = run / "hof" / best["name"]
    (tmp_path / "wm2.safetensors").unlink()  # the working copy goes away; the entry keeps its own
    assert checkpoint.load(entry / "world_model.safetensors", kind="world_model")[0]["w"].tolist() == [2.0, 2.0]
    wm, pi, ev = _artifacts(tmp_path, 4, 900.0, 1000.0)
    with pytest.raises(LemarioError, match="never overwritten"):
        hof.add(run, 2, wm, pi, ev, {}, "max_x")
    r = run_cli("hof", "list", str(run))
    assert r.returncode == 0 and r.stdout.index("iter2_") < r.stdout.index("iter3_") < r.stdout.index("iter1_")
    assert "ranked by score:" in r.stdout, "iteration 3's flags do not count on max_x"
    r = run_cli("hof", "export", str(run), "--iteration", "3", "--to", str(tmp_path / "exported"))
    assert r.returncode == 0 and (tmp_path / "exported" / "policy.safetensors").exists()
    r = run_cli("hof", "show", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no hall of fame" in r.stderr


def test_a_run_deciding_on_flags_ranks_its_hall_of_fame_by_the_confirmation_flag_rate_then_max_x(tmp_path):
    """Session 51's iterations 5 and 6 as confirmed on fresh seeds: 1948 with 2 flags in 30, 1846 with 4: on max_x
    iteration 5 is the best (and the next iteration warm-starts from it), with flags counted iteration 6; among equal
    rates (iteration 4's 2 in 30) the mean max_x; an entry without a confirmation ranks by its evaluation."""
    run = _hof_run(tmp_path / "run", "either")
    confirmed = {5: (1948.4, 2 / 30), 6: (1846.4, 4 / 30), 4: (1609.1, 2 / 30)}
    for i, (mean, flags) in confirmed.items():
        wm, pi, ev = _artifacts(tmp_path, i, mean + 100, 3161.0, flags=0.3)
        cf = _artifacts(tmp_path, 10 + i, mean, 3161.0, flags)[2]
        hof.add(run, i, wm, pi, ev, {}, "either", confirm_dir=cf)
    wm, pi, ev = _artifacts(tmp_path, 7, 2100.0, 3161.0, flags=0.1)
    hof.add(run, 7, wm, pi, ev, {}, "either")
    assert [e["iteration"] for e in hof.catalog(run)] == [6, 7, 5, 4]
    assert [e["iteration"] for e in hof.ranked(hof.catalog(run), "max_x")] == [7, 5, 6, 4]
    assert hof.top(run)[0]["score"] == 1846.4, "score stays the confirmation's mean max_x"
    r = run_cli("hof", "list", str(run))
    assert r.returncode == 0 and "ranked by flags, then score:" in r.stdout
    assert rank_key("flags", {"mean_max_x": 900.0, "flag_rate": 0.0}) < rank_key(
        "flags", {"mean_max_x": 800.0, "flag_rate": 0.04}
    )


def flagged(i, means, flags, decision="", episodes=30):
    """An iteration from its policies' mean max_x and flags (of `episodes` each)."""
    rates = [f / episodes for f in flags]
    mean_sd = lambda v: (sum(v) / len(v), float(np.std(v, ddof=1)))  # noqa: E731
    (mean, sd), (rate, rate_sd) = mean_sd(means), mean_sd(rates)
    return IterationScore(i, mean, sd, len(means), decision, 1, rate, rate_sd, episodes)


def test_the_flag_test_floors_the_policies_spread_at_their_episodes_binomial_spread():
    """Session 51's iterations 3 and 6 (flags 3 / 1 / 0 and 4 / 6 / 6 of 30 per policy, max_x lower in 6): by hand,
    iteration 6's policies agree more (sd 0.038) than 17 flags in 92 allow (sqrt(p (1 - p) / 30) = 0.071), iteration
    3's spread (0.051) is above its floor (0.041); z = 0.1333 / sqrt(0.0709^2 / 3 + 0.0509^2 / 3) = 2.65."""
    three = flagged(3, [1893.6, 1717.4, 1687.7], [3, 1, 0], "commit")
    six = flagged(6, [1660.6, 1837.6, 1551.3], [4, 6, 6])
    p6 = 17 / 92
    se6, se3 = math.sqrt(p6 * (1 - p6) / 30) / math.sqrt(3), three.flag_sd / math.sqrt(3)
    d = decide([three], six, DetectorConfig(rule="components"))
    assert d.flags.z == pytest.approx((six.flag_rate - three.flag_rate) / math.hypot(se6, se3))
    assert d.flags.z == pytest.approx(2.65, abs=0.01) and d.flags.best_iteration == 3 and d.metric == "either"
    assert d.verdict == "commit" and d.z < 0 and "the flag rate 0.178 beats the best (0.044, iter 3)" in d.reason
    assert decide([three], six, MAX_X).verdict == "branch", "on max_x alone the same results are a loss"
    # rule welch: iteration 6's variance is the binomial model's (known), 3's an estimate on 2 df: Welch's df
    # (se6^2 + se3^2)^2 / (se3^4 / 2) = 17.3, where t 2.65 has the one-sided p of z 2.39: still a commit at 1.96
    welch = decide([three], six)
    df = (se6**2 + se3**2) ** 2 / (se3**4 / 2)
    assert welch.rule == "welch" and welch.flags.df == pytest.approx(df) and df == pytest.approx(17.3, abs=0.1)
    assert welch.flags.t == pytest.approx(d.flags.z) and welch.flags.z == pytest.approx(t_as_z(d.flags.z, df))
    assert welch.flags.z == pytest.approx(2.39, abs=0.01) and welch.verdict == "commit"
    none = [flagged(1, [700, 710, 720], [0, 0, 0], "commit")]
    d = decide(none, flagged(2, [700, 705, 730], [0, 0, 0]), DetectorConfig(metric="flags"))
    assert d.flags.df == math.inf, "both variances are the binomial model's: no df lost"
    assert d.flags.z == 0.0 and d.flags.se == pytest.approx(math.sqrt((1 / 92) * (91 / 92) / 30) / math.sqrt(3))
    one_each = decide(none, flagged(2, [700, 705, 730], [1, 1, 1]), DetectorConfig(metric="flags"))
    assert one_each.verdict == "branch", "three policies with one flag each are not a noiseless gain over none"


def test_either_metric_splits_the_false_commit_rate_between_its_two_tests():
    """threshold 1.645 (5% one-sided) becomes 1.960 for each test (2.5% each): a max_x gain of z 1.8 commits on max_x
    alone and branches on either."""
    assert DetectorConfig().test_threshold() == pytest.approx(1.960, abs=1e-3)  # 1.645 is z_0.95 to 3 places
    assert DetectorConfig(metric="max_x").test_threshold() == 1.645
    history = [flagged(1, [1000, 1100, 1200], [0, 0, 0], "commit")]
    gain = flagged(2, [1147, 1247, 1347], [0, 0, 0])  # +147 over se 100 sqrt(2 / 3) = 81.6: z 1.80
    assert decide(history, gain, MAX_X).verdict == "commit"
    d = decide(history, gain, DetectorConfig(rule="components"))
    assert d.verdict == "branch" and d.z == pytest.approx(1.80, abs=0.01) and "1.96 each" in d.reason
    assert "1.96 each (5.0% false commits split" in d.reason
    strict = decide(history, gain, DetectorConfig(rule="components", threshold=2.326))  # 1% one-sided, 0.5% each
    assert "2.576 each (1.0% false commits split" in strict.reason
    # rule welch: the two sds (100 each) rest on 2 df each, Welch's df (2 v)^2 / (2 v^2 / 2) = 4, and t 1.80 on 4 df
    # has the one-sided p of z 1.45: no commit even on max_x alone
    welch = decide(history, gain, DetectorConfig(metric="max_x"))
    assert welch.df == pytest.approx(4.0) and welch.t == pytest.approx(d.z) and welch.z == pytest.approx(1.45, abs=0.01)
    assert welch.verdict == "branch" and "as z at 4.0 df" in welch.reason
    with pytest.raises(LemarioError, match="--detector.rule seeds decides on max_x alone"):
        DetectorConfig(rule="seeds").validate()


def test_a_replayed_detector_decides_each_iteration_against_its_own_earlier_verdicts():
    """Session 51's run (`runs/flywheel-1-1`, policies' means and flags per iteration): replayed on max_x the run's own
    verdicts come back (commit x3, branch, branch, halt, then 7 committed past the halt, 8 a branch); on either, the
    flags commit iteration 6 and the halt never comes."""
    run = [
        ([734.6, 750.0, 785.3], [0, 0, 0]),
        ([1318.2, 1344.0, 1306.8], [2, 0, 0]),
        ([1893.6, 1717.4, 1687.7], [3, 1, 0]),
        ([1607.9, 1710.1, 1330.6], [0, 1, 0]),
        ([1781.1, 1841.4, 1597.2], [6, 0, 0]),
        ([1660.6, 1837.6, 1551.3], [4, 6, 6]),
        ([1954.0, 1910.7, 2216.3], [2, 4, 7]),
        ([2308.1, 1660.6, 1766.6], [8, 0, 3]),
    ]
    scores = [flagged(i, means, flags, "halt") for i, (means, flags) in enumerate(run, 1)]  # its verdicts set aside
    verdicts = lambda cfg: [d.verdict for d in replay(scores, cfg)]  # noqa: E731
    assert verdicts(MAX_X) == ["commit"] * 3 + ["branch", "branch", "halt", "commit", "branch"]
    either = DetectorConfig(rule="components")
    assert verdicts(either) == ["commit"] * 3 + ["branch", "branch", "commit", "commit", "branch"]
    # rule welch: iteration 7's max_x gain over 3 (t 2.27 on ~3.9 df) is z 1.67, above 1.645 alone, not 1.96 each
    assert verdicts(DetectorConfig()) == ["commit"] * 3 + ["branch", "branch", "commit", "branch", "branch"]


def test_the_biased_reference_is_play_from_spawn_not_the_explorers(tmp_path):
    """The report's biased-random reference averages the collected biased episodes only: the explorer's biased
    explorations start from restored cells deep in the level (a run --start-from collects none: no reference)."""
    rng = np.random.default_rng(0)
    (tmp_path / "corpus").mkdir()
    rows = [("1-1", "iter001", 300), ("1-1", "iter001", 500), ("1-2", "iter001", 200), ("1-1", EXPLORE_RUN, 2900)]
    for i, (level, run, max_x) in enumerate(rows):
        ep = make_episode(rng, 5, level)
        ep.meta.update(policy="biased", run=run, run_index=i, seed=i, max_x=max_x)
        write_episode(tmp_path / "corpus" / f"e{i}.h5", ep)
    assert biased_references(tmp_path) == {None: pytest.approx(1000 / 3), "1-1": 400.0, "1-2": 200.0}
    for f in (tmp_path / "corpus").glob("e[0-2].h5"):
        f.unlink()
    assert biased_references(tmp_path) == {}
