"""The variance decomposition and the power of an iteration's comparison: known answers, recovery of known
components from simulated scores, and the closed-form power against the detector's commit rate in simulation."""

import math

import numpy as np
import pytest

from lemario.play.variance import (
    Components,
    component_cis,
    decompose,
    detectable,
    estimate_variance,
    power,
    power_table,
    simulate,
)

TRUE = Components(world_model=80.0**2, policy=60.0**2, eval_seed=40.0**2, episode=300.0**2)


def test_decompose_known_answer_without_noise():
    a = np.array([0.0, 10.0])[:, None, None]  # world models
    b = np.array([[-1.0, 1.0], [-1.0, 1.0]])[:, :, None]  # policies within each
    s = np.array([-3.0, 3.0])[None, None, :]  # evaluation seeds
    c = decompose(a + b + s)
    # policy: var([-1, 1]) = 2; world model: var([0, 10]) = 50 less the policies' share of a world model's mean (2 / 2)
    assert (c.world_model, c.policy, c.eval_seed, c.episode) == pytest.approx((49.0, 2.0, 18.0, 0.0))


def test_decompose_recovers_known_components():
    scores = simulate(TRUE, 80, 6, 80, np.random.default_rng(0), mean=800.0)
    c = decompose(scores)
    for name in ("world_model", "policy", "eval_seed", "episode"):
        assert math.sqrt(getattr(c, name)) == pytest.approx(math.sqrt(getattr(TRUE, name)), rel=0.15), name


def test_one_world_model_leaves_its_component_unmeasured_and_bad_shapes_are_refused():
    c = decompose(simulate(TRUE, 1, 4, 10, np.random.default_rng(1)))
    assert math.isnan(c.world_model) and c.episode > 0
    assert estimate_variance(c, 1, 4, 10) == pytest.approx(c.policy / 4 + c.episode / 40)
    with pytest.raises(ValueError, match="at least 2 policies"):
        decompose(np.zeros((3, 1, 10)))
    with pytest.raises(ValueError, match="shape"):
        decompose(np.zeros((3, 10)))


def test_intervals_cover_the_truth_most_of_the_time():
    rng = np.random.default_rng(2)
    hits = np.zeros(4)
    trials = 200
    for i in range(trials):
        cis = component_cis(simulate(TRUE, 3, 3, 30, rng), draws=2000, seed=i)
        hits += [lo <= getattr(TRUE, n) <= hi for n, (lo, hi) in cis.items()]
    assert (hits / trials >= 0.9).all(), hits / trials  # nominal 95%, with 3 world models as the study runs


def test_closed_form_power_is_the_detectors_commit_rate():
    """Two iterations of 1 world model x 3 policies x 30 episodes, simulated; the detector commits when the gain
    exceeds z_0.95 standard errors of the difference (the eval seeds shared, so their effect cancels)."""
    rng = np.random.default_rng(3)
    W, K, E = 1, 3, 30
    v = estimate_variance(TRUE, W, K, E)
    z = 1.6448536269514722
    n = 3000
    for delta in (0.0, 100.0, 200.0):
        seeds = rng.normal(0, math.sqrt(TRUE.eval_seed), (n, 1, 1, E))  # the same evaluation seeds for both
        before = np.stack([simulate(replace_seed(TRUE), W, K, E, rng) for _ in range(n)]) + seeds
        after = np.stack([simulate(replace_seed(TRUE), W, K, E, rng) for _ in range(n)]) + seeds + delta
        diff = after.mean(axis=(1, 2, 3)) - before.mean(axis=(1, 2, 3))
        rate = float((diff / math.sqrt(2 * v) > z).mean())
        assert rate == pytest.approx(power(delta, v), abs=0.03), delta
    assert power(0.0, v) == pytest.approx(0.05)
    assert power(detectable(v), v) == pytest.approx(0.8)


def replace_seed(c: Components) -> Components:
    """The components without the eval-seed effect (the test adds one shared draw itself)."""
    return Components(c.world_model, c.policy, 0.0, c.episode)


def test_power_table_rows():
    rows = power_table(TRUE, world_models=(1, 3), policies=(3, 100), episodes=30)
    by = {(r["world_models"], r["policies"]): r for r in rows}
    assert by[(1, 100)]["se"] > math.sqrt(TRUE.world_model) > by[(3, 100)]["se"]  # more policies cannot beat W = 1
    assert by[(1, 3)]["detectable"] > by[(3, 3)]["detectable"]
    assert all(0 <= p <= 1 for r in rows for p in r["power"].values())
    assert by[(3, 3)]["power"]["200"] > by[(3, 3)]["power"]["50"]
