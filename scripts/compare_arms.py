"""Arms of policies on the same eval seeds side by side: paired differences, world-model draws pooled.

    python scripts/compare_arms.py NAME=EVALDIR [NAME=EVALDIR ...] [--draws LABEL=NAME,NAME,... ...]
        [--diff LABEL,LABEL ...] [--json OUT]

An arm is a folder holding one `lemario eval` folder per policy (EVALDIR/sNNNN/episodes.jsonl, e.g. the five
policy seeds of one recipe on one world model), or one evaluation of several policies (EVALDIR/episodes.jsonl, e.g.
a flywheel iteration's ITER/eval/LEVEL: two runs' iterations compared on their shared eval seeds). Per arm: each
policy's mean max_x and flag rate, their mean ± sd, the flags over every episode, and where the episodes end. The
first arm is the reference: every other arm's paired differences in max_x and in flags (percentage points) pair
episodes by policy seed and eval seed, or by eval seed alone against a reference of one policy, with bootstrap
intervals. `--draws fresh=a,b,c` pools arms that are independent draws of the same recipe (one world model each)
into one row: the mean over draws of each draw's mean over its policies, with a nested bootstrap interval over
draws, policies and episodes (issue 20's target asked of agents whose world model is a draw too, not of five policies
on one lucky model). `--diff A,B`: pooled A − pooled B for two `--draws` rows whose arms are on the same world models
in the same order, the draws resampled together (two recipes compared where their policies need not share seeds).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from lemario.core.files import write_json
from lemario.core.runlog import read_rows
from lemario.play.stats import bootstrap_ci, draw_means, format_ends, nested_bootstrap_ci, pool_draws, where_ends


def fail(message: str) -> None:
    print(f"compare_arms: {message}", file=sys.stderr)
    raise SystemExit(2)


EpisodeKey = tuple[str | None, int]
"""An episode's key, (level, eval seed): `lemario eval --levels` plays every level on the same seeds."""


def policy_name(spec: str) -> str:
    """'policy:.../s1001/policy.safetensors' -> 's1001' (the policy's folder: its seed in a flywheel iteration)."""
    kind, _, path = spec.partition(":")
    return Path(path).parent.name if path else kind


def read_arm(folder: Path) -> dict[str, dict[EpisodeKey, dict]]:
    """{policy name: {(level, eval seed): episode}}: of every sNNNN/episodes.jsonl under `folder` (one `lemario
    eval` folder a policy), or of `folder`/episodes.jsonl split by agent (one evaluation of several policies, e.g. a
    flywheel iteration's ITER/eval/LEVEL, each named by its policy's folder)."""
    if (folder / "episodes.jsonl").is_file():
        rows: dict[str, list[dict]] = {}
        for e in read_rows(folder / "episodes.jsonl"):
            rows.setdefault(e["agent"], []).append(e)
        names = {spec: policy_name(spec) for spec in rows}
        if len(set(names.values())) < len(names):
            names = {spec: spec for spec in rows}
        rows = {names[spec]: episodes for spec, episodes in rows.items()}
    else:
        files = sorted(folder.glob("*/episodes.jsonl"))
        if not files:
            fail(
                f"{folder} holds no episodes.jsonl nor */episodes.jsonl: pass a `lemario eval` folder or a folder "
                "of them, one per policy"
            )
        rows = {f.parent.name: read_rows(f) for f in files}
    return {name: {(e.get("level"), e["eval_seed"]): e for e in episodes} for name, episodes in rows.items()}


def summarize(policies: dict[str, dict[EpisodeKey, dict]]) -> dict:
    """One arm: per-policy means and flag rates, their mean and sd, all its episodes' flags and ends."""
    means = [float(np.mean([e["max_x"] for e in p.values()])) for p in policies.values()]
    flags = [float(np.mean([e["flag_get"] for e in p.values()])) for p in policies.values()]
    episodes = [e for p in policies.values() for e in p.values()]
    return {
        "policies": list(policies),
        "means": means,
        "flag_rates": flags,
        "mean": float(np.mean(means)),
        "sd": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"),
        "flags": int(sum(e["flag_get"] for e in episodes)),
        "episodes": len(episodes),
        "ends": format_ends(where_ends(episodes)),
    }


def paired(arm: dict[str, dict[EpisodeKey, dict]], ref: dict[str, dict[EpisodeKey, dict]]) -> dict:
    """Paired differences arm - ref over the episodes both played (same policy seed and eval seed; a one-policy
    reference pairs every policy by eval seed), in max_x and in flag percentage points, with bootstrap intervals."""
    only = next(iter(ref.values())) if len(ref) == 1 else None
    pairs = [(e, (only or ref.get(s, {})).get(k)) for s, p in arm.items() for k, e in p.items()]
    pairs = [(a, b) for a, b in pairs if b is not None]
    if not pairs:
        return {"pairs": 0}
    dx = [a["max_x"] - b["max_x"] for a, b in pairs]
    df = [100.0 * (a["flag_get"] - b["flag_get"]) for a, b in pairs]
    return {
        "pairs": len(pairs),
        "max_x": float(np.mean(dx)),
        "max_x_ci": bootstrap_ci(dx),
        "flag_points": float(np.mean(df)),
        "flag_points_ci": bootstrap_ci(df),
    }


def nested(arms: list[dict[str, dict[EpisodeKey, dict]]], key: str) -> list[list[list[float]]]:
    """Draws -> policies -> episodes' `key`, as `nested_bootstrap_ci` takes them."""
    return [[[float(e[key]) for e in p.values()] for p in arm.values()] for arm in arms]


def pool_arms(arms: list[dict[str, dict[EpisodeKey, dict]]]) -> dict:
    """Arms as independent world-model draws of one recipe (`lemario.play.stats.pool_draws`): draws, then
    policies, then episodes."""
    return pool_draws([[list(p.values()) for p in arm.values()] for arm in arms])


def diff_draws(a: list[dict[str, dict[EpisodeKey, dict]]], b: list[dict[str, dict[EpisodeKey, dict]]]) -> dict:
    """Pooled a - pooled b over the same world models (arms paired by position), in max_x and in flag points."""
    out = {}
    for key, scale, name in (("max_x", 1.0, "max_x"), ("flag_get", 100.0, "flag_points")):
        xa, xb = nested(a, key), nested(b, key)
        by_draw = [scale * (ma - mb) for ma, mb in zip(draw_means(xa), draw_means(xb))]
        lo, hi = nested_bootstrap_ci(xa, minus=xb)
        out |= {name: float(np.mean(by_draw)), f"{name}_ci": (scale * lo, scale * hi), f"{name}_by_draw": by_draw}
    return out


def compare(arms: dict[str, Path], draws: dict[str, list[str]] | None = None, diffs=()) -> dict:
    data = {name: read_arm(folder) for name, folder in arms.items()}
    ref = next(iter(data))
    rows = {
        name: {**summarize(p), **({"paired": paired(p, data[ref])} if name != ref else {})} for name, p in data.items()
    }
    for label, names in (draws or {}).items():
        if missing := [n for n in names if n not in data]:
            fail(f"--draws {label} names arm {missing[0]!r}, which is not one of the arms: {', '.join(data)}")
    pooled = {label: pool_arms([data[n] for n in names]) for label, names in (draws or {}).items()}
    differences = {}
    for a, b in diffs:
        if (a not in pooled) or (b not in pooled) or len(draws[a]) != len(draws[b]):
            fail(f"--diff {a},{b}: both must be --draws labels with as many arms (one per world model, same order)")
        differences[f"{a} - {b}"] = diff_draws([data[n] for n in draws[a]], [data[n] for n in draws[b]])
    return {"reference": ref, "arms": rows, "draws": pooled, "diffs": differences}


def parse_pairs(items: list[str], what: str, example: str) -> dict[str, str]:
    if bad := [a for a in items if "=" not in a]:
        fail(f"{what} {bad[0]!r} is not NAME=VALUE: e.g. {example}")
    return dict(a.split("=", 1) for a in items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arms", nargs="+", help="NAME=EVALDIR; the first is the reference of the paired differences")
    ap.add_argument("--draws", nargs="*", default=[], help="LABEL=NAME,NAME: arms pooled as world-model draws")
    ap.add_argument("--diff", nargs="*", default=[], help="A,B: pooled A - pooled B (two --draws labels)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    arms = {k: Path(v) for k, v in parse_pairs(args.arms, "arm", "fresh=runs/eval-fresh").items()}
    draws = {k: v.split(",") for k, v in parse_pairs(args.draws, "--draws", "fresh=fresh-a,fresh-b").items()}
    if bad := [d for d in args.diff if d.count(",") != 1]:
        fail(f"--diff {bad[0]!r} is not A,B: e.g. --diff fresh1200,fresh600")
    table = compare(arms, draws, [tuple(d.split(",")) for d in args.diff])
    for name, r in table["arms"].items():
        print(
            f"{name:18s} {' / '.join(f'{m:.0f}' for m in r['means'])} = {r['mean']:.0f} ± {r['sd']:.0f}; flags "
            f"{' / '.join(f'{f:.0%}' for f in r['flag_rates'])} = {r['flags']}/{r['episodes']} "
            f"({r['flags'] / r['episodes']:.1%})"
        )
        print(f"{'':18s} ends: {r['ends']}")
        if (p := r.get("paired")) and p["pairs"]:
            (lo, hi), (flo, fhi) = p["max_x_ci"], p["flag_points_ci"]
            print(
                f"{'':18s} paired - {table['reference']} over {p['pairs']}: max_x {p['max_x']:+.0f} [{lo:+.0f}, "
                f"{hi:+.0f}], flags {p['flag_points']:+.1f} pts [{flo:+.1f}, {fhi:+.1f}]"
            )
    for label, d in table["draws"].items():
        x, f = d["max_x"], d["flag_rate"]
        print(
            f"{label:18s} {d['draws']} draws, {d['policies']} policies: max_x {x['mean']:.0f} [{x['ci95'][0]:.0f}, "
            f"{x['ci95'][1]:.0f}] (sd between draws {x['sd_between_draws']:.0f}); flags {f['mean']:.1%} "
            f"[{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}] (draws {' / '.join(f'{m:.0%}' for m in f['per_draw'])})"
        )
    for label, d in table["diffs"].items():
        (lo, hi), (flo, fhi) = d["max_x_ci"], d["flag_points_ci"]
        print(
            f"{label}: max_x {d['max_x']:+.0f} [{lo:+.0f}, {hi:+.0f}], flags {d['flag_points']:+.1f} pts "
            f"[{flo:+.1f}, {fhi:+.1f}] (draws {' / '.join(f'{x:+.1f}' for x in d['flag_points_by_draw'])})"
        )
    if args.json:
        write_json(args.json, table)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the reader went away (`... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
