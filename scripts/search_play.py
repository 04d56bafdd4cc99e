"""Find a button sequence that clears a level by random play from saved states.

A small Go-Explore: an archive keeps, per 32-pixel column of x, the shortest-found way to get there; each
round restores one of the furthest cells and plays the biased random policy from it. It made the scripted
test fixture tests/fixtures/flag_1-1.txt (a clear of 1-1, used to check `flag_get`).

    .venv/bin/python scripts/search_play.py --out tests/fixtures/flag_1-1.txt
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lemario.control.policies import BiasedPolicy
from lemario.games.mario.env import EnvConfig, SuperMarioBros


@dataclass(frozen=True)
class Args:
    level: str = "1-1"
    seed: int = 0
    rounds: int = 20000
    """Give up after this many restores."""
    out: Path | None = None
    """Write the actions here as run-length 'AxN' tokens."""


def rle(actions: list[int]) -> str:
    runs: list[list[int]] = []
    for a in actions:
        if runs and runs[-1][0] == a:
            runs[-1][1] += 1
        else:
            runs.append([a, 1])
    return " ".join(f"{a}x{n}" for a, n in runs)


def main(args: Args) -> None:
    env = SuperMarioBros(EnvConfig(level=args.level, max_steps=100_000))
    rng = np.random.default_rng(args.seed)
    policy = BiasedPolicy(env.config.action_set, rng)
    _, info = env.reset()
    archive = {info["x_pos"] // 32: (env.save_state(), [], info)}  # column -> (state, actions, info)
    t0 = time.time()
    for round_ in range(args.rounds):
        columns = sorted(archive)
        col = columns[-1 - min(int(rng.exponential(2.0)), len(columns) - 1)]  # mostly the frontier
        state, actions, info = archive[col]
        env.reset(options={"state": state})
        actions = list(actions)
        policy.reset()
        for _ in range(int(rng.integers(10, 60))):
            a = policy.act(info)
            _, _, term, trunc, info = env.step(a)
            actions.append(a)
            if info["flag_get"]:
                text = rle(actions)
                print(f"cleared {args.level} after {round_} rounds, {time.time() - t0:.0f} s: {len(actions)} steps")
                if args.out:
                    args.out.write_text(
                        f"# {env.config.action_set} action set, level {args.level}, from the level start; found by "
                        f"scripts/search_play.py --seed {args.seed}\n{text}\n"
                    )
                print(text)
                return
            if term or trunc:
                break
            c = info["x_pos"] // 32
            if c not in archive or len(actions) < len(archive[c][1]):
                archive[c] = (env.save_state(), list(actions), info)
        if round_ % 500 == 0:
            print(
                f"round {round_}: frontier x={max(archive) * 32}, {len(archive)} cells, {time.time() - t0:.0f} s",
                flush=True,
            )
    raise SystemExit(f"not cleared in {args.rounds} rounds")


if __name__ == "__main__":
    main(tyro.cli(Args))
