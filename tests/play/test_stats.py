"""Evaluation statistics against hand-computed values."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from lemario.play.stats import (
    aggregate,
    bootstrap_ci,
    format_ends,
    incomplete_beta,
    kseed_summary,
    mode_share,
    nested_bootstrap_ci,
    paired_permutation_p,
    pool_draws,
    t_as_z,
    where_ends,
    z_score,
)


def ep(max_x, final_x=None, flag=0, steps=100):
    return {"max_x": max_x, "final_x": max_x if final_x is None else final_x, "flag_get": flag, "steps": steps}


def test_aggregate_by_hand():
    rows = [ep(100), ep(200), ep(300, flag=1, steps=50), ep(1000)]
    a = aggregate(rows)
    assert a["mean_max_x"] == 400 and a["median_max_x"] == 250 and a["max_max_x"] == 1000
    assert a["flag_rate"] == 0.25 and a["mean_steps"] == 87.5 and a["episodes"] == 4
    assert a["ci95_low"] < 400 < a["ci95_high"]


def test_bootstrap_ci_of_a_constant_and_of_a_known_spread():
    assert bootstrap_ci([5, 5, 5, 5]) == (5.0, 5.0)
    x = np.random.default_rng(0).normal(100, 10, 400)
    lo, hi = bootstrap_ci(x)
    se = 10 / np.sqrt(400)  # 0.5
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.15) and hi == pytest.approx(x.mean() + 1.96 * se, abs=0.15)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2) and bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)


def test_nested_bootstrap_ci_by_hand():
    assert nested_bootstrap_ci([[[5, 5], [5]], [[5, 5, 5]]], resamples=200) == (5.0, 5.0)
    # two world models, constant within each: a resample is 0, 50 or 100 with probabilities 1/4, 1/2, 1/4
    lo, hi = nested_bootstrap_ci([[[0, 0], [0, 0]], [[100, 100], [100, 100]]], resamples=2000)
    assert (lo, hi) == (0.0, 100.0)
    # one group of one unit is the plain bootstrap of its values
    x = np.random.default_rng(0).normal(100, 10, 400)
    assert nested_bootstrap_ci([[x]], resamples=4000) == pytest.approx(bootstrap_ci(x), abs=0.15)
    # policies that differ widen the interval over what their pooled episodes alone would give
    units = [np.full(30, m) + np.random.default_rng(i).normal(0, 1, 30) for i, m in enumerate([0, 20, 40, 60, 80])]
    nested, flat = nested_bootstrap_ci([units], resamples=2000), bootstrap_ci(np.concatenate(units))
    assert nested[1] - nested[0] > 5 * (flat[1] - flat[0])
    # a difference on the same world models draws them together: their 100-point spread cancels
    a, b = [[[0, 0]], [[100, 100]]], [[[-10, -10]], [[90, 90]]]
    assert nested_bootstrap_ci(a, resamples=500, minus=b) == (10.0, 10.0)
    with pytest.raises(ValueError, match="pairs them one to one"):
        nested_bootstrap_ci(a, minus=b[:1])


def test_pool_draws_by_hand():
    ep = lambda x, f: {"max_x": x, "flag_get": f}  # noqa: E731
    # draw 1: policies of means 100 and 300 -> 200; draw 2: one policy of mean 600 (its empty sibling left out)
    design = [[[ep(100, 0), ep(100, 0)], [ep(300, 1), ep(300, 0)]], [[ep(600, 1)], []], [[]]]
    p = pool_draws(design)
    assert (p["draws"], p["policies"]) == (2, 3), "an empty policy and a draw with none are left out"
    assert p["max_x"]["per_draw"] == [200, 600] and p["max_x"]["mean"] == 400
    assert p["flag_rate"]["per_draw"] == [0.25, 1.0] and p["flag_rate"]["mean"] == 0.625
    assert p["max_x"]["sd_between_draws"] == pytest.approx(np.std([200, 600], ddof=1))
    assert pool_draws([[[]]]) == {}


def test_mode_collapse_like_the_seeds_seed_400():
    stuck = [ep(682)] * 30  # every episode ended at exactly x = 682
    a = aggregate(stuck)
    assert a["mode_collapse"] and a["mode_final_x"] == 682 and a["mode_share"] == 1.0
    varied = [ep(x) for x in range(300, 1800, 50)]
    assert not aggregate(varied)["mode_collapse"]
    assert mode_share([100, 104, 108, 500]) == (100, 0.75)  # within 8 px of 100: 100, 104, 108
    flags = [ep(3161, flag=1)] * 25 + [ep(x) for x in (700, 1500, 2000, 2450, 2455)]
    a = aggregate(flags)  # 25 of 30 end at the flag's x: an agent that wins, not one stuck
    assert not a["mode_collapse"] and a["mode_final_x"] == 2450 and a["mode_share"] == pytest.approx(2 / 30)
    half = [ep(3161, flag=1)] * 3 + [ep(682)] * 27  # 90% stuck at 682 beside a few flags
    assert aggregate(half)["mode_collapse"] and aggregate(half)["mode_share"] == pytest.approx(0.9)


def test_kseed_summary_by_hand():
    per_seed = {
        "s1": aggregate([ep(600), ep(800)]),
        "s2": aggregate([ep(900), ep(900)]),
        "s3": aggregate([ep(682)] * 5),
    }
    k = kseed_summary(per_seed)
    assert k["mean_of_means"] == pytest.approx((700 + 900 + 682) / 3)
    assert k["sd_between_seeds"] == pytest.approx(np.std([700, 900, 682], ddof=1))
    assert k["best_seed"] == "s2" and k["mode_collapsed_seeds"] == ["s3"]
    assert kseed_summary(per_seed, best_by=lambda agg: -agg["mean_max_x"])["best_seed"] == "s3", "best by a key"


def test_z_score_of_the_seeds_false_breakthrough():
    # the seed's five seeds: 682-876, sd 99; iter 13 reported 1066 at +3.06 sd
    assert z_score(1066, 1066 - 3.06 * 99, 99) == pytest.approx(3.06)


def test_paired_permutation_p_by_hand():
    assert paired_permutation_p([1.0, 2.0, 3.0]) == 1 / 8  # only the observed signs reach its mean
    assert paired_permutation_p([1.0, -1.0]) == 3 / 4  # means of the 4 patterns: 0, 0, 1, -1
    assert paired_permutation_p([-1.0, -2.0, -3.0]) == 1.0
    strong = np.random.default_rng(0).normal(1.0, 0.5, 60)  # sampled: 1 / (resamples + 1) is the floor
    assert paired_permutation_p(strong, resamples=9999) == 1 / 10000
    null = [paired_permutation_p(np.random.default_rng(s).normal(0, 1, 40), resamples=2000) for s in range(40)]
    assert 0.25 < np.mean(null) < 0.75  # p-values of null data spread around 1/2


def test_where_ends_counts_each_end_by_place_and_leaves_the_flag_out():
    rows = [
        {**ep(1795), "end": "enemy"},
        {**ep(1760), "end": "enemy"},
        {**ep(1910, final_x=1905), "end": "enemy"},
        {**ep(2473), "end": "pit"},
        {**ep(3161, flag=1), "end": "flag"},
        {**ep(2300, final_x=2228), "end": "step_limit"},
    ]
    ends = where_ends(rows)
    assert ends == {"enemy": {1700: 2, 1900: 1}, "pit": {2400: 1}, "step_limit": {2200: 1}}
    assert list(ends) == ["enemy", "pit", "step_limit"] and list(ends["enemy"]) == [1700, 1900]  # most frequent first
    assert where_ends(rows, bin_px=200)["enemy"] == {1600: 2, 1800: 1}
    assert format_ends(ends) == "enemy 1700-1799 2, 1900-1999 1 | pit 2400-2499 1 | step_limit 2200-2299 1"
    assert format_ends(ends, bins=1) == "enemy 1700-1799 2, elsewhere 1 | pit 2400-2499 1 | step_limit 2200-2299 1"


def test_the_incomplete_beta_against_a_binomial_tail():
    """I_p(a, n - a + 1) = P(Binomial(n, p) >= a): I_0.4(2, 3) = P(Bin(4, 0.4) >= 2) = 0.5248."""
    assert incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)
    assert incomplete_beta(2, 3, 0.0) == 0.0 and incomplete_beta(2, 3, 1.0) == 1.0
    assert incomplete_beta(0.5, 0.5, 0.5) == pytest.approx(0.5, abs=1e-12), "symmetric"


def test_a_t_statistic_as_the_z_of_its_p_value():
    """Known quantiles: t on 2 df has the closed form P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)), so t_0.95,2 = 2.920
    and t_0.975,2 = 4.303; t_0.95,4 = 2.132; on 1 df (Cauchy) P(T <= 1) = 3/4, z 0.6745; infinite df: t itself."""
    assert t_as_z(2.919986, 2) == pytest.approx(1.644854, abs=1e-5)
    assert t_as_z(4.302653, 2) == pytest.approx(1.959964, abs=1e-5)
    assert t_as_z(2.131847, 4) == pytest.approx(1.644854, abs=1e-5)
    assert t_as_z(-2.131847, 4) == pytest.approx(-1.644854, abs=1e-5)
    assert t_as_z(1.0, 1) == pytest.approx(0.674490, abs=1e-6)
    assert t_as_z(1.7, math.inf) == 1.7 and t_as_z(0.0, 3) == 0.0 and t_as_z(math.inf, 3) == math.inf
    tail = 0.5 * (1 - 1e3 / math.sqrt(2 + 1e6))  # far in the tail, from the closed form
    assert t_as_z(1e3, 2) == pytest.approx(-NormalDist().inv_cdf(tail), rel=1e-6)
