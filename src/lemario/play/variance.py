"""Where an evaluation score's noise comes from: world-model seeds, policy seeds, episodes (issue 19).

A variance study evaluates W world models (training seeds) x K policies trained in each x the same E evaluation
seeds. Its scores y[w, p, e] (max_x) follow the balanced random-effects model

    y[w, p, e] = mu + a[w] + b[w, p] + s[e] + eps[w, p, e]
    a ~ N(0, world_model)   b ~ N(0, policy)   s ~ N(0, eval_seed)   eps ~ N(0, episode)

with policies nested in world models and the evaluation seeds crossed with both (every policy plays the same
seeds). `decompose` estimates the four components from the expected mean squares (ANOVA; each truncated at 0),
`component_cis` gives generalized-pivot intervals. The eval-seed effect `s` is shared by everything evaluated
on the same seeds, so it cancels when two iterations are compared on them; the variance of an iteration's mean
score for that comparison is

    V(W, K, E) = world_model / W + policy / (W K) + episode / (W K E)          (`estimate_variance`)

The detector compares two such means: z = (mean - best) / sqrt(V_now + V_best), committing above z_(1 - alpha).
With both designs equal, the power to detect an improvement delta is Phi(delta / sqrt(2 V) - z_(1 - alpha))
(`power`), and the smallest improvement found with power 1 - beta is (z_(1 - alpha) + z_(1 - beta)) sqrt(2 V)
(`detectable`). `power_table` lays both out over designs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

COMPONENTS = ("world_model", "policy", "eval_seed", "episode")
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Components:
    """Variance components of a score, in max_x squared."""

    world_model: float
    policy: float
    eval_seed: float
    episode: float

    def to_json(self) -> dict:
        return asdict(self)


def mean_squares(scores: np.ndarray) -> dict[str, tuple[float, int]]:
    """(W, K, E) scores -> {term: (mean square, degrees of freedom)} of the nested-crossed ANOVA."""
    W, K, E = scores.shape
    grand = scores.mean()
    wm = scores.mean(axis=(1, 2))  # (W,)
    pol = scores.mean(axis=2)  # (W, K)
    seed = scores.mean(axis=(0, 1))  # (E,)
    residual = scores - pol[:, :, None] - seed[None, None, :] + grand
    terms = {
        "world_model": (K * E * ((wm - grand) ** 2).sum(), W - 1),
        "policy": (E * ((pol - wm[:, None]) ** 2).sum(), W * (K - 1)),
        "eval_seed": (W * K * ((seed - grand) ** 2).sum(), E - 1),
        "episode": ((residual**2).sum(), (W * K - 1) * (E - 1)),
    }
    return {name: (float(ss / df) if df else math.nan, df) for name, (ss, df) in terms.items()}


def decompose(scores: np.ndarray) -> Components:
    """(W, K, E) scores -> the four components (method of moments, each floored at 0). W = 1 leaves the world-model
    component unmeasured (nan); K >= 2 and E >= 2 are required."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (world models, policies, episodes), got shape {scores.shape}")
    W, K, E = scores.shape
    if K < 2 or E < 2:
        raise ValueError(f"a decomposition needs at least 2 policies per world model and 2 episodes, got {K}, {E}")
    ms = {name: m for name, (m, _) in mean_squares(scores).items()}
    return Components(
        world_model=max(0.0, (ms["world_model"] - ms["policy"]) / (K * E)) if W > 1 else math.nan,
        policy=max(0.0, (ms["policy"] - ms["episode"]) / E),
        eval_seed=max(0.0, (ms["eval_seed"] - ms["episode"]) / (W * K)),
        episode=ms["episode"],
    )


def simulate(c: Components, W: int, K: int, E: int, rng: np.random.Generator, mean: float = 0.0) -> np.ndarray:
    """(W, K, E) scores drawn from the model with components `c` (an unmeasured world-model component counts 0)."""
    wm = 0.0 if math.isnan(c.world_model) else c.world_model
    return (
        mean
        + rng.normal(0, math.sqrt(wm), (W, 1, 1))
        + rng.normal(0, math.sqrt(c.policy), (W, K, 1))
        + rng.normal(0, math.sqrt(c.eval_seed), (1, 1, E))
        + rng.normal(0, math.sqrt(c.episode), (W, K, E))
    )


def component_cis(
    scores: np.ndarray, level: float = 0.95, draws: int = 20000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Generalized-pivot intervals of each component (Weerahandi's; close to nominal coverage for balanced designs
    even with 3 world models): each sum of squares SS over its chi-square U ~ chi2(df) stands for its expected mean
    square, and a component's draws are the same differences `decompose` takes (floored at 0). Wide with few
    world models: that width is the measurement's."""
    scores = np.asarray(scores, np.float64)
    W, K, E = scores.shape
    decompose(scores)  # the shape checks
    rng = np.random.default_rng(seed)
    ems = {}  # term -> (draws,) of its expected mean square
    for name, (ms, df) in mean_squares(scores).items():
        ems[name] = ms * df / rng.chisquare(df, draws) if df else np.full(draws, np.nan)
    pivots = {
        "world_model": (ems["world_model"] - ems["policy"]) / (K * E),
        "policy": (ems["policy"] - ems["episode"]) / E,
        "eval_seed": (ems["eval_seed"] - ems["episode"]) / (W * K),
        "episode": ems["episode"],
    }
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for name in COMPONENTS:
        x = np.maximum(pivots[name], 0.0)
        out[name] = (
            (math.nan, math.nan) if np.isnan(x).any() else (float(np.quantile(x, lo)), float(np.quantile(x, hi)))
        )
    return out


def pooled_within_sd(groups: list[list[float]]) -> float:
    """The sd within groups (policies' means within their world models), pooled: the root of the groups' mean
    variance (ddof 1); one group: its plain sd."""
    return math.sqrt(float(np.mean([np.var(g, ddof=1) for g in groups])))


def estimate_variance(c: Components, W: int, K: int, E: int) -> float:
    """Variance of the mean score of W world models x K policies x E episodes, for a comparison on the same
    evaluation seeds (the eval-seed component cancels). An unmeasured world-model component counts 0."""
    wm = 0.0 if math.isnan(c.world_model) else c.world_model
    return wm / W + c.policy / (W * K) + c.episode / (W * K * E)


def power(delta: float, variance: float, alpha: float = 0.05) -> float:
    """Chance that a one-sided z-test at false-commit rate alpha commits a true improvement `delta` between two
    means of equal design, each of `variance`."""
    if variance <= 0:
        return 1.0 if delta > 0 else alpha
    return _NORMAL.cdf(delta / math.sqrt(2 * variance) - _NORMAL.inv_cdf(1 - alpha))


def detectable(variance: float, alpha: float = 0.05, power_: float = 0.8) -> float:
    """The smallest improvement committed with probability `power_` (the minimum detectable effect)."""
    return (_NORMAL.inv_cdf(1 - alpha) + _NORMAL.inv_cdf(power_)) * math.sqrt(2 * variance)


def power_table(
    c: Components,
    world_models: tuple[int, ...] = (1, 2, 3, 5),
    policies: tuple[int, ...] = (1, 3, 5, 10),
    episodes: int = 30,
    deltas: tuple[float, ...] = (50.0, 100.0, 200.0),
    alpha: float = 0.05,
    power_: float = 0.8,
) -> list[dict]:
    """One row per (W, K): the standard error of an iteration's mean, the smallest improvement it detects at
    `power_`, and its power for each of `deltas`."""
    rows = []
    for W in world_models:
        for K in policies:
            v = estimate_variance(c, W, K, episodes)
            rows.append(
                {
                    "world_models": W,
                    "policies": K,
                    "episodes": episodes,
                    "se": math.sqrt(v),
                    "detectable": detectable(v, alpha, power_),
                    "power": {f"{d:g}": power(d, v, alpha) for d in deltas},
                }
            )
    return rows


def format_power_table(rows: list[dict], alpha: float = 0.05, power_: float = 0.8) -> str:
    """The power table as aligned text."""
    deltas = list(rows[0]["power"])
    head = f"{'W':>3}{'K':>4}{'E':>4}{'se':>8}{f'MDE@{power_:.0%}':>10}" + "".join(
        f"{'P(+' + d + ')':>10}" for d in deltas
    )
    lines = [f"power of one iteration against another (one-sided, {alpha:.0%} false commits)", head]
    for r in rows:
        cells = "".join(f"{r['power'][d]:>10.2f}" for d in deltas)
        lines.append(
            f"{r['world_models']:>3}{r['policies']:>4}{r['episodes']:>4}{r['se']:>8.1f}{r['detectable']:>10.0f}{cells}"
        )
    return "\n".join(lines)
