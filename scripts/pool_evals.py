"""Pool several `lemario eval` folders (e.g. one per --seed-offset, each possibly `--levels`) into one table.

    python scripts/pool_evals.py runs/eval-biased/o0 runs/eval-biased/o1000 ... [--json OUT.json]
        [--group NAME=TEXT ...]

Per level and agent: the evaluation harness's aggregate of the episodes of every folder, and each folder's (each set
of eval seeds') mean max_x with their sd. Per level and method (`biased`, `policy`, `planner`, ...): the agents of
one method are its seeds, so the row is the harness's K-seed summary: each seed's mean over every set and the sd
between seeds (the seed spread issue 21's target is in). `--group plain=pi-plain emb=pi-emb` makes the agents whose
spec contains TEXT a method NAME of their own (two arms of policies in one evaluation).
"""

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from lemario.control.agents import method_of
from lemario.core.files import write_json
from lemario.play.stats import aggregate, kseed_summary


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


def pool(folders: list[Path], groups: dict[str, str] | None = None) -> dict:
    """{'agents': [...], 'methods': [...]}: per (level, agent) the harness's aggregate of its episodes over every
    folder, with each folder's mean and their sd; per (level, method) the harness's K-seed summary of its agents
    (`groups`: method name -> a text whose agents form that method)."""
    episodes: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for i, folder in enumerate(folders):
        for ep in read_episodes(folder):
            episodes[ep["level"], ep["agent"]][i].append(ep)
    agents = []
    for (level, agent), sets in episodes.items():
        set_means = [float(np.mean([e["max_x"] for e in sets[i]])) for i in sorted(sets)]
        agents.append(
            {
                "level": level,
                "agent": agent,
                **aggregate([e for i in sorted(sets) for e in sets[i]]),
                "set_means": set_means,
                "sd_sets": float(np.std(set_means, ddof=1)) if len(set_means) > 1 else float("nan"),
            }
        )
    by_method: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for row in agents:
        named = [name for name, text in (groups or {}).items() if text in row["agent"]]
        by_method[row["level"], named[0] if named else method_of(row["agent"])][row["agent"]] = row
    methods = [
        {
            "level": level,
            "method": method,
            **kseed_summary(rows),
            "seed_means": [r["mean_max_x"] for r in rows.values()],
        }
        for (level, method), rows in by_method.items()
    ]
    return {"folders": [str(f) for f in folders], "agents": agents, "methods": methods}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    ap.add_argument(
        "--group", nargs="*", default=[], help="NAME=TEXT: agents whose spec contains TEXT form method NAME"
    )
    args = ap.parse_args()
    if bad := [g for g in args.group if "=" not in g]:
        print(f"pool_evals: --group {bad[0]!r} is not NAME=TEXT: e.g. --group plain=pi-plain", file=sys.stderr)
        raise SystemExit(2)
    table = pool(args.folders, dict(g.split("=", 1) for g in args.group))
    print(f"{'level':6} {'method':8} {'seeds':>5} {'mean':>6} {'sd seeds':>8} {'flags':>6}  seed means")
    for r in table["methods"]:
        means = " ".join(f"{m:.0f}" for m in r["seed_means"])
        print(
            f"{r['level']:6} {r['method']:8} {r['seeds']:5d} {r['mean_of_means']:6.0f} {r['sd_between_seeds']:8.0f} "
            f"{r['flag_rate']:6.1%}  {means}"
        )
    print(f"\n{'level':6} {'agent':40} {'episodes':>8} {'mean':>6} {'sd sets':>7}  set means")
    for r in table["agents"]:
        means = " ".join(f"{m:.0f}" for m in r["set_means"])
        print(
            f"{r['level']:6} {r['agent'][-40:]:40} {r['episodes']:8d} {r['mean_max_x']:6.0f} {r['sd_sets']:7.0f}  "
            f"{means}"
        )
    if args.json:
        write_json(args.json, table)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the reader went away (`... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
