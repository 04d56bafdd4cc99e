"""Which key picks an iteration's best policy of K? Split-half cross-validation on the flywheel runs' evaluations.

    python scripts/pick_keys.py RUN [RUN ...] [--splits 2000] [--seed 0]

For every iteration of the runs whose K policies' evaluation episodes hold a flag: each split draws every policy's
episodes at random into halves A and B, picks the best policy on A by each key and scores the pick on B, episodes
nothing picked on (its held-out flag rate and mean max_x, and its flag regret: the best held-out flag rate of the K
minus the pick's). Keys: `max_x` and `flags` as `lemario.flywheel.detector.rank_key` defines them (mean max_x; flag
rate, then mean max_x), `reward` the mean of max_x + flag_bonus px per flag (the imagination reward's exchange rate).
Iterations where no policy flagged are skipped (every key picks by mean max_x there). The differences from `max_x`
come with a 95% bootstrap interval over the iterations (each iteration's mean over its splits).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lemario.control.reward import RewardWeights
from lemario.flywheel.detector import rank_key

FLAG_BONUS = RewardWeights().flag_bonus
KEYS = ("max_x", "flags", "reward")


def key_value(key: str, x: np.ndarray, flags: np.ndarray) -> tuple[float, ...]:
    """A half's score by `key` (larger is better)."""
    if key == "reward":
        return (float((x + FLAG_BONUS * flags).mean()),)
    return rank_key(key, {"mean_max_x": float(x.mean()), "flag_rate": float(flags.mean())})


def policies(iteration: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each policy's evaluation episodes of an iteration: (max_x, flag) arrays in episode order."""
    rows = [json.loads(line) for line in (iteration / "eval" / "episodes.jsonl").read_text().splitlines() if line]
    out = []
    for agent in sorted({r["agent"] for r in rows}):
        mine = sorted((r for r in rows if r["agent"] == agent), key=lambda r: r["episode"])
        out.append((np.array([r["max_x"] for r in mine], float), np.array([r["flag_get"] for r in mine], float)))
    return out


def cross_validate(pols: list[tuple[np.ndarray, np.ndarray]], splits: int, rng: np.random.Generator) -> dict:
    """Key -> the pick's held-out {"flag", "max_x", "regret"}, averaged over `splits` random halvings."""
    n = min(len(x) for x, _ in pols)
    sums = {k: np.zeros(3) for k in KEYS}
    for _ in range(splits):
        perm = [rng.permutation(n) for _ in pols]
        a, b = [p[: n // 2] for p in perm], [p[n // 2 :] for p in perm]
        held = [(x[i].mean(), f[i].mean()) for (x, f), i in zip(pols, b)]
        best = max(h[1] for h in held)
        for k in KEYS:
            pick = max(range(len(pols)), key=lambda j: key_value(k, pols[j][0][a[j]], pols[j][1][a[j]]))
            sums[k] += (held[pick][1], held[pick][0], best - held[pick][1])
    return {k: dict(zip(("flag", "max_x", "regret"), (s / splits).tolist())) for k, s in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--splits", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    results = {}
    for run in args.runs:
        for it in sorted(run.glob("iter[0-9][0-9][0-9]")):
            pols = policies(it) if (it / "eval" / "episodes.jsonl").is_file() else []
            if any(f.any() for _, f in pols):
                results[f"{run.name}/{it.name}"] = cross_validate(pols, args.splits, rng)
    if not results:
        print("pick_keys: no iteration with a flag in its evaluation: pass flywheel run folders", file=sys.stderr)
        sys.exit(2)
    print(f"{len(results)} iterations with a flag, {args.splits} splits each; the pick scored on its held-out half")
    print(f"{'key':<8}{'flag rate':>10}{'mean max_x':>12}{'flag regret':>13}")
    for k in KEYS:
        m = {q: np.mean([r[k][q] for r in results.values()]) for q in ("flag", "max_x", "regret")}
        print(f"{k:<8}{m['flag']:>10.4f}{m['max_x']:>12.1f}{m['regret']:>13.4f}")
    boot = rng.integers(0, len(results), (10000, len(results)))
    for k in KEYS[1:]:
        for q, fmt in (("flag", "+.4f"), ("max_x", "+.1f")):
            d = np.array([r[k][q] - r["max_x"][q] for r in results.values()])
            lo, hi = np.percentile(d[boot].mean(1), [2.5, 97.5])
            print(f"{k} - max_x, {q}: {d.mean():{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")
    print("per iteration, flags - max_x in held-out flag rate:")
    for name, r in results.items():
        print(f"  {name}: {r['flags']['flag'] - r['max_x']['flag']:+.3f}")


if __name__ == "__main__":
    main()
