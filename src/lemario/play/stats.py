"""Statistics for evaluations: per-agent aggregates with a bootstrap CI, and the K-seed table.

Pure functions on plain lists, checked against hand-computed values in tests/test_stats.py. The seed project
announced a breakthrough that was a 3-sigma draw; these are what keep a single lucky seed from looking like one.
"""

from __future__ import annotations

import math
from collections import Counter
from statistics import NormalDist

import numpy as np

# A seed whose episodes (at least MODE_MIN_EPISODES) end short of the flag within MODE_TOLERANCE px of one x this
# often (a share of all its episodes) has collapsed to one behaviour.
MODE_SHARE, MODE_TOLERANCE, MODE_MIN_EPISODES = 0.8, 8, 5
_NORMAL = NormalDist()


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def nested_bootstrap_ci(
    groups, level: float = 0.95, resamples: int = 10_000, seed: int = 0, minus=None
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of means of a two-level design: `groups` is a list of groups (world
    models), each a list of units (its policies), each a list of values (their episodes). Each resample draws groups,
    then units within each drawn group, then values within each drawn unit (one of `resamples` resamples of that
    unit's values, drawn at random per pick), all with replacement, so the interval carries the noise of every level
    (with a handful of groups, mostly theirs). `minus`, a second design on the same groups in the same order (another
    arm's policies on the same world models): the interval of the difference of the two means, each resample
    drawing the same groups for both."""
    if minus is not None and len(minus) != len(groups):
        raise ValueError(f"minus has {len(minus)} groups, groups {len(groups)}: a difference pairs them one to one")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(groups), size=(resamples, len(groups)))  # (R, G): the groups each resample draws

    def resampled_means(design) -> np.ndarray:  # (R,)
        slots = np.zeros((resamples, len(groups)))
        for g, group in enumerate(design):
            units = [np.asarray(u, dtype=np.float64) for u in group]
            bank = np.stack([u[rng.integers(0, len(u), size=(resamples, len(u)))].mean(1) for u in units])  # (U, R)
            picks = rng.integers(0, len(units), size=(resamples, len(groups), len(units)))  # units drawn per slot
            columns = rng.integers(0, resamples, size=picks.shape)  # each pick its own resample of its values
            slots = np.where(drawn == g, bank[picks, columns].mean(-1), slots)  # (R, G)
        return slots.mean(1)

    means = resampled_means(groups) - (resampled_means(minus) if minus is not None else 0.0)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def draw_means(design) -> list[float]:
    """Each group's (draw's) mean over its units of their mean over values, for a design `nested_bootstrap_ci` takes."""
    return [float(np.mean([np.mean(u) for u in g])) for g in design]


def pool_draws(design: list[list[list[dict]]]) -> dict:
    """Independent draws (world models) -> their policies -> episodes: for max_x and the flag rate, the mean over
    draws of each draw's mean over its policies, its nested bootstrap interval, the draws' means and their sd.
    Policies without episodes, and then draws without policies, are left out."""
    design = [d for d in ([p for p in d if p] for d in design) if d]
    if not design:
        return {}
    out = {"draws": len(design), "policies": sum(len(d) for d in design)}
    for name, field in (("max_x", "max_x"), ("flag_rate", "flag_get")):
        values = [[[float(e[field]) for e in p] for p in d] for d in design]
        means = draw_means(values)
        out[name] = {
            "mean": float(np.mean(means)),
            "ci95": nested_bootstrap_ci(values),
            "per_draw": means,
            "sd_between_draws": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"),
        }
    return out


def paired_permutation_p(differences, resamples: int = 100_000, seed: int = 0) -> float:
    """One-sided p-value that paired differences have a mean above zero: the sign-flip permutation test (exact
    over all 2^n sign patterns for n <= 16, else `resamples` random ones, the observed pattern counted once)."""
    d = np.asarray(differences, dtype=np.float64)
    observed = d.mean()
    if len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)  # (2^n, n) every pattern
        return float(np.mean((signs * d).mean(axis=1) >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, len(d)))
    return float((np.sum((signs * d).mean(axis=1) >= observed - 1e-12) + 1) / (resamples + 1))


def mode_share(final_x, tolerance: int = MODE_TOLERANCE) -> tuple[int, float]:
    """The most common ending x (to within `tolerance`) and the share of episodes ending there."""
    xs = [int(v) for v in final_x]
    if not xs:
        return 0, 0.0
    counts = Counter(xs)
    best_x, best_n = 0, -1
    for x in counts:
        n = sum(c for v, c in counts.items() if abs(v - x) <= tolerance)
        if n > best_n or (n == best_n and x < best_x):
            best_x, best_n = x, n
    return best_x, best_n / len(xs)


def aggregate(episodes: list[dict]) -> dict:
    """Summary of one agent's episodes (each with max_x, final_x, flag_get, steps)."""
    max_x = np.array([e["max_x"] for e in episodes], dtype=np.float64)
    lo, hi = bootstrap_ci(max_x)
    short = [e["final_x"] for e in episodes if not e["flag_get"]]  # reaching the flag is no collapse, however often
    mode_x, share = mode_share(short)
    share *= len(short) / max(len(episodes), 1)
    return {
        "episodes": len(episodes),
        "mean_max_x": float(max_x.mean()) if len(max_x) else float("nan"),
        "median_max_x": float(np.median(max_x)) if len(max_x) else float("nan"),
        "max_max_x": float(max_x.max()) if len(max_x) else float("nan"),
        "ci95_low": lo,
        "ci95_high": hi,
        "flag_rate": float(np.mean([e["flag_get"] for e in episodes])) if episodes else float("nan"),
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if episodes else float("nan"),
        "mode_final_x": mode_x,
        "mode_share": share,
        "mode_collapse": bool(share >= MODE_SHARE and len(episodes) >= MODE_MIN_EPISODES),
    }


def where_ends(episodes: list[dict], bin_px: int = 100) -> dict[str, dict[int, int]]:
    """Where episodes end, by how: for each end but the flag (enemy, pit, step_limit, ...), the number of episodes
    whose final x falls in each `bin_px`-wide bin (keyed by the bin's start), most frequent first."""
    counts: dict[str, Counter] = {}
    for e in episodes:
        if e["end"] != "flag":
            counts.setdefault(e["end"], Counter())[int(e["final_x"]) // bin_px * bin_px] += 1
    return {end: dict(c.most_common()) for end, c in sorted(counts.items())}


def format_ends(ends: dict[str, dict[int, int]], bin_px: int = 100, bins: int = 5) -> str:
    """`where_ends` in one line, each end's `bins` most frequent places: 'enemy 1700-1799 18, 1900-1999 10 | pit ...'"""
    parts = []
    for end, by_x in ends.items():
        top = ", ".join(f"{x}-{x + bin_px - 1} {n}" for x, n in list(by_x.items())[:bins])
        more = sum(list(by_x.values())[bins:])
        parts.append(f"{end} {top}" + (f", elsewhere {more}" if more else ""))
    return " | ".join(parts)


def kseed_summary(per_seed: dict[str, dict], best_by=lambda agg: agg["mean_max_x"]) -> dict:
    """Across K independently trained agents: the mean of their means, the sd between seeds, and the best seed by
    `best_by` of its aggregate (mean max_x unless told: the flywheel's detector metric picks otherwise)."""
    means = np.array([s["mean_max_x"] for s in per_seed.values()], dtype=np.float64)
    return {
        "seeds": len(means),
        "mean_of_means": float(means.mean()) if len(means) else float("nan"),
        "sd_between_seeds": float(means.std(ddof=1)) if len(means) > 1 else float("nan"),
        "best_seed": max(per_seed, key=lambda k: best_by(per_seed[k])) if per_seed else None,
        "mode_collapsed_seeds": [k for k, s in per_seed.items() if s["mode_collapse"]],
        "flag_rate": float(np.mean([s["flag_rate"] for s in per_seed.values()])) if per_seed else float("nan"),
    }


def z_score(value: float, mean: float, sd: float) -> float:
    """How many between-seed sds a value lies from a mean (the seed's iter 13 was at +3.06)."""
    return float((value - mean) / sd) if sd > 0 else float("inf")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz; converges
    fast for x < (a + 1) / (a + b + 2), the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) otherwise)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def t_as_z(t: float, df: float) -> float:
    """A t statistic on `df` degrees of freedom as the standard normal z of the same one-sided p-value (df infinite:
    t itself), so one z threshold serves tests with few policies and many."""
    if math.isinf(df) or math.isnan(t) or math.isinf(t) or t == 0.0:
        return t
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))  # P(T > |t|)
    if tail <= 0.0:
        return math.copysign(math.inf, t)
    return -_NORMAL.inv_cdf(tail) if t > 0 else _NORMAL.inv_cdf(tail)
