"""How the pit after 1-1's second staircase kills: every evaluation episode that reaches it, by what happened on the
staircase's top stair.

Replays the episodes of `lemario eval` folders exactly (the env is deterministic and a policy's sampling is seeded
by the episode's evaluation seed; each replay is checked against its recorded max_x) and sorts each episode that
reaches x >= `reach` by the top stair (on the ground with x in `top`):
- latch: a jump pressed there while the previous step held A (a jump starts only after a release: the press does
  nothing: the jump latch);
- over: Mario never stood on it (a jump from a lower stair carried him past it);
- free: he stood on it and any jump he pressed there could start.
Printed: arrivals, pit deaths and the death rate of each kind, and with --trace N the first N step traces of each
(action, x, y, x speed, g on the ground) from `trace_from`.

    .venv/bin/python benchmarks/pit_arrivals.py runs/c44-eval-fw-iter3/s6401 runs/c44-eval-fw-iter3/s6402 ...
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from lemario.control.agents import make_agent
from lemario.core import runlog
from lemario.core.files import read_json
from lemario.games.mario.actions import action_set, holds
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.play.episodes import play

SHORT = {"right": "R", "left": "L", "down": "D", "up": "U", "A": "A", "B": "B"}


@dataclass(frozen=True)
class Args:
    evals: tyro.conf.Positional[tuple[Path, ...]]
    """`lemario eval` folders of policies (summary.json and episodes.jsonl each)."""
    reach: int = 2400
    """An episode arrives at the pit when its max_x reaches this."""
    top: tuple[int, int] = (2410, 2450)
    """x range of the top stair (on the ground there)."""
    passed: int = 2520
    """max_x beyond the pit's far edge: the episode passed it."""
    trace: int = 0
    """Print the step traces of this many episodes of each kind."""
    trace_from: int = 2380


def classify(env: SuperMarioBros, agent, seed: int, args: Args) -> tuple[str, dict, list[str]]:
    """(kind, the episode's row, its step trace from `trace_from`) of one replayed episode."""
    jump = holds(env.config.action_set, "A")
    names = ["".join(SHORT[b] for b in a) or "." for a in action_set(env.config.action_set)]
    seen = {"before": None, "latch": False, "stood": False}
    trace: list[str] = []

    def on_step(obs, action, info) -> None:
        before = seen["before"]  # (the previous action, on the ground, x) when this action was chosen
        if action is not None and before is not None and before[1] and args.top[0] <= before[2] <= args.top[1]:
            seen["stood"] = True
            seen["latch"] |= before[0] is not None and jump[action] and jump[before[0]]
        if action is not None and info["x_pos"] >= args.trace_from and len(trace) < 40:
            g = "g" if info["on_ground"] else ""
            trace.append(f"{names[action]}:{info['x_pos']},{info['y_pos']},{info['x_vel']}{g}")
        seen["before"] = (action, info["on_ground"], info["x_pos"])

    row = play(env, agent, seed, on_step)
    kind = "latch" if seen["latch"] else "free" if seen["stood"] else "over"
    return kind, row, trace


def main(args: Args) -> None:
    torch.set_num_threads(1)
    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in ("latch", "over", "free")}
    traces: dict[str, list[str]] = collections.defaultdict(list)
    for folder in args.evals:
        summary = read_json(folder / "summary.json")
        env = SuperMarioBros(EnvConfig(**summary["config"]["env"]))
        agents = {}
        for r in runlog.read_rows(folder / "episodes.jsonl"):
            if r["max_x"] < args.reach:
                continue
            agent = agents.setdefault(r["agent"], make_agent(r["agent"], env.config))
            kind, row, trace = classify(env, agent, r["eval_seed"], args)
            if row["max_x"] != r["max_x"]:
                raise SystemExit(f"{folder}: episode {r['episode']} replays to {row['max_x']}, recorded {r['max_x']}")
            outcome = "passed" if row["max_x"] > args.passed else row["end"]
            counts[kind][outcome] += 1
            if len(traces[kind]) < args.trace:
                traces[kind].append(f"{outcome:6s} " + " ".join(trace))
        env.close()
        print(f"{folder}: replayed", flush=True)
    print(f"\n{'top stair':<8}{'arrivals':>10}{'pit deaths':>12}{'death rate':>12}  other ends")
    for kind, c in counts.items():
        n, pit = sum(c.values()), c["pit"]
        other = {k: v for k, v in c.items() if k not in ("pit", "passed")}
        print(f"{kind:<8}{n:>10}{pit:>12}{pit / max(n, 1):>12.0%}  {other or ''}")
    for kind, lines in traces.items():
        print(f"\n{kind}:\n" + "\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
