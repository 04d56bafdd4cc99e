"""Pool several `lemario eval` folders (e.g. one per --seed-offset, each possibly `--levels`) into one table.

    python scripts/pool_evals.py runs/eval-biased/o0 runs/eval-biased/o1000 ... [--json OUT.json]

Per level and agent: the mean max_x of each folder (a set of eval seeds), their mean and sd, the episodes pooled and
the flag rate. Per level and method (`biased`, `policy`, `planner`, ...): the agents of one method are its seeds,
so the row gives each seed's mean over every set and the sd across seeds (the seed spread issue 21's target is in).
"""

import argparse
import json
import statistics as st
import sys
from collections import defaultdict
from pathlib import Path

from lemario.control.agents import method_of


def read_episodes(folder: Path) -> list[dict]:
    path = folder / "episodes.jsonl"
    if not path.is_file():
        print(f"pool_evals: {path} is missing: pass folders written by `lemario eval`", file=sys.stderr)
        raise SystemExit(2)
    episodes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if episodes and "level" not in episodes[0]:  # a one-level evaluation names its level in its config only
        level = json.loads((folder / "summary.json").read_text())["config"]["env"]["level"]
        episodes = [{**ep, "level": level} for ep in episodes]
    return episodes


def sd(values: list[float]) -> float:
    return st.stdev(values) if len(values) > 1 else 0.0


def pool(folders: list[Path]) -> dict:
    """{'agents': [...], 'methods': [...]}: one row per (level, agent) and per (level, method)."""
    # (level, agent) -> set index -> max_x values; flags counted over all sets
    scores: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    flags: dict[tuple[str, str], int] = defaultdict(int)
    for i, folder in enumerate(folders):
        for ep in read_episodes(folder):
            key = (ep["level"], ep["agent"])
            scores[key][i].append(ep["max_x"])
            flags[key] += int(ep["flag_get"])
    agents = []
    for (level, agent), sets in scores.items():
        set_means = [st.mean(sets[i]) for i in sorted(sets)]
        n = sum(len(v) for v in sets.values())
        agents.append(
            {
                "level": level,
                "agent": agent,
                "set_means": set_means,
                "mean": st.mean(set_means),
                "sd_sets": sd(set_means),
                "episodes": n,
                "flag_rate": flags[(level, agent)] / n,
            }
        )
    by_method: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in agents:
        by_method[(row["level"], method_of(row["agent"]))].append(row)
    methods = [
        {
            "level": level,
            "method": method,
            "seeds": len(rows),
            "seed_means": [r["mean"] for r in rows],
            "mean": st.mean(r["mean"] for r in rows),
            "sd_seeds": sd([r["mean"] for r in rows]),
            "episodes": sum(r["episodes"] for r in rows),
            "flag_rate": sum(r["flag_rate"] * r["episodes"] for r in rows) / sum(r["episodes"] for r in rows),
        }
        for (level, method), rows in by_method.items()
    ]
    return {"folders": [str(f) for f in folders], "agents": agents, "methods": methods}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    table = pool(args.folders)
    print(f"{'level':6} {'method':8} {'seeds':>5} {'episodes':>8} {'mean':>6} {'sd seeds':>8} {'flags':>6}  seed means")
    for r in table["methods"]:
        means = " ".join(f"{m:.0f}" for m in r["seed_means"])
        print(
            f"{r['level']:6} {r['method']:8} {r['seeds']:5d} {r['episodes']:8d} {r['mean']:6.0f} {r['sd_seeds']:8.0f} "
            f"{r['flag_rate']:6.1%}  {means}"
        )
    print(f"\n{'level':6} {'agent':40} {'episodes':>8} {'mean':>6} {'sd sets':>7}  set means")
    for r in table["agents"]:
        means = " ".join(f"{m:.0f}" for m in r["set_means"])
        print(f"{r['level']:6} {r['agent'][-40:]:40} {r['episodes']:8d} {r['mean']:6.0f} {r['sd_sets']:7.0f}  {means}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
