"""How often the flywheel's detector commits when nothing improved, and how often when something did: its false-commit
rate and power on simulated iterations, per metric (`--detector.metric max_x | flags | either`).

An iteration is K policies of E evaluation episodes each. Policy i's mean max_x is mu + sd * u_i, its flag
probability logistic(logit(p) + tau * (rho * u_i + sqrt(1 - rho^2) * v_i)) (u, v standard normal: a policy that
goes further flags more often, with correlation rho on the latent scale), its flags Binomial(E, p_i). Each draw
decides one iteration against one committed best drawn the same way (`lemario.flywheel.detector.decide`, rules
'components' (t read as z) and 'welch' (t as z at Welch's df), policy noise only, as on a host without a variance
study). Null: both iterations alike; the
alternatives raise the flag probability (max_x unchanged: session 51's iteration 6) or the mean (flags unchanged).
The defaults follow session 51's run (`runs/flywheel-1-1`): K 3, E 30, between-policy sd of mean max_x 136 (the
median of its eight iterations), tau 0.5 (its iterations 6-8's flag spread beyond the binomial's).

    .venv/bin/python benchmarks/detector_rates.py                # ~2 min on one core
    .venv/bin/python benchmarks/detector_rates.py --tau 1.0 --draws 40000
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tyro

from lemario.core.device import machine
from lemario.flywheel.detector import METRICS, DetectorConfig, IterationScore, decide

RULES = ("components", "welch")


@dataclass(frozen=True)
class Args:
    k: int = 3
    """Policies per iteration."""
    episodes: int = 30
    """Evaluation episodes per policy."""
    sd: float = 136.0
    """Between-policy sd of mean max_x."""
    tau: float = 0.5
    """Between-policy sd of the flag probability on the logit scale."""
    rho: float = 0.5
    """Correlation of a policy's max_x and flag effects."""
    draws: int = 20_000
    """Simulated decisions per cell."""
    seed: int = 0


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def iterations(rng: np.random.Generator, a: Args, mean: float, p: float, n: int, it: int) -> list[IterationScore]:
    """n simulated iterations: each its K policies' mean max_x and flag rate."""
    u, v = rng.standard_normal((n, a.k)), rng.standard_normal((n, a.k))
    means = mean + a.sd * u
    probs = 1 / (1 + np.exp(-(logit(p) + a.tau * (a.rho * u + math.sqrt(1 - a.rho**2) * v))))
    rates = rng.binomial(a.episodes, probs) / a.episodes
    return [
        IterationScore(it, float(m.mean()), float(m.std(ddof=1)), a.k, "commit" if it == 1 else "", 1,
                       float(r.mean()), float(r.std(ddof=1)), a.episodes)
        for m, r in zip(means, rates, strict=True)
    ]  # fmt: skip


def commit_rate(a: Args, rng: np.random.Generator, base: tuple[float, float], now: tuple[float, float]) -> list[float]:
    """The share of draws each metric commits `now` (mean, p) against a best at `base`."""
    best = iterations(rng, a, *base, a.draws, 1)
    current = iterations(rng, a, *now, a.draws, 2)
    cfgs = [DetectorConfig(rule=r, metric=m) for r in RULES for m in METRICS]
    return [float(np.mean([decide([b], c, cfg).verdict == "commit" for b, c in zip(best, current, strict=True)]))
            for cfg in cfgs]  # fmt: skip


def main(a: Args) -> None:
    rng = np.random.default_rng(a.seed)
    print(machine())
    print(f"K {a.k}, E {a.episodes}, policy sd {a.sd:.0f}, tau {a.tau}, rho {a.rho}, {a.draws} draws per row")
    print(f"{'':<40}" + "".join(f"{r:>{9 * len(METRICS)}}" for r in RULES))
    print(f"{'case':<40}" + "".join(f"{m:>9}" for _ in RULES for m in METRICS))
    cases = [(f"null, flag p {p:.2f}", (1500.0, p), (1500.0, p)) for p in (0.0, 0.02, 0.05, 0.15, 0.5, 0.8, 0.95)]
    cases += [
        ("flags 0.05 -> 0.15, max_x unchanged", (1700.0, 0.05), (1700.0, 0.15)),
        ("flags 0.05 -> 0.20, max_x -80", (1770.0, 0.05), (1690.0, 0.20)),
        ("flags 0.50 -> 0.65, max_x unchanged", (2500.0, 0.50), (2500.0, 0.65)),
        ("max_x +250, flags 0.05 unchanged", (1500.0, 0.05), (1750.0, 0.05)),
        ("max_x +400, no flags", (800.0, 0.0), (1200.0, 0.0)),
    ]
    for name, base, now in cases:
        print(f"{name:<40}" + "".join(f"{r:>9.3f}" for r in commit_rate(a, rng, base, now)))
    print("(null rows: the false-commit rate, nominally 0.05; the others: the power)")


if __name__ == "__main__":
    main(tyro.cli(Args))
