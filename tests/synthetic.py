"""A tiny synthetic corpus that needs no emulator: a bright square that actions push around an 84x84 frame; and a
PPO run folder made by hand (`fake_ppo_run`).

Its labels follow the corpus schema (x_pos, y_pos, x_vel, y_vel, on_ground, ...), so world-model training,
probes and diagnostics run end to end on it in seconds.
"""

import json
from pathlib import Path

import numpy as np

from lemario.data.corpus import Episode, write_episode
from lemario.games.mario.ram import LABELS
from lemario.games.mario.rewards import episode_rewards

PUSH = {0: (0, 0), 1: (1, 0), 2: (-1, 0), 3: (0, 1), 4: (0, -1)}  # action -> velocity change


def make_episode(
    rng: np.random.Generator, steps: int, level: str = "1-1", background: int = 20, flag: bool = False
) -> Episode:
    """One episode of the square on `level` (its world and stage labels), drawn over a `background` grey; with flag
    its last frame touches the flagpole (`flag_get`)."""
    world, stage = (int(p) for p in level.split("-"))
    x, y, vx, vy = rng.integers(10, 70), 0, 0, 0
    frames, labels, actions = [], [], []
    for t in range(steps + 1):
        frame = np.full((84, 84), background, np.uint8)
        frame[70 - y : 78 - y, x : x + 8] = 230  # the square, y counted upward from the floor
        frames.append(frame)
        row = dict.fromkeys(LABELS, 0)
        row.update(
            x_pos=x, y_pos=y, x_vel=vx, y_vel=vy, on_ground=int(y == 0), lives=2, time=400 - t, world=world, stage=stage
        )
        labels.append([row[k] for k in LABELS])
        if t == steps:
            break
        a = int(rng.integers(0, 5))
        actions.append(a)
        dvx, dvy = PUSH[a]
        vx = int(np.clip(vx + dvx, -3, 3))
        vy = int(np.clip(vy + dvy, -3, 3)) if y > 0 or dvy > 0 else 0
        x = int(np.clip(x + vx, 0, 76))
        y = int(np.clip(y + vy, 0, 60))
        if y == 0:
            vy = max(vy, 0)
    labels = np.array(labels, np.int32)
    labels[-1, LABELS.index("flag_get")] = int(flag)
    meta = {
        "seed": 0,
        "policy": "synthetic",
        "level": level,
        "backend": "synthetic",
        "action_set": "right-only",  # five actions, as PUSH has
        "n_steps": steps,
        "max_x": int(labels[:, 0].max()),
        "flag_get": int(flag),
        "run": "run-0001",
    }
    return Episode(
        np.stack(frames),
        np.array(actions, np.uint8),
        np.zeros((steps + 1, 2048), np.uint8),
        labels,
        episode_rewards(labels),
        meta,
    )


def write_corpus(
    folder: Path,
    episodes: int = 12,
    steps: int = 40,
    seed: int = 0,
    level: str = "1-1",
    background: int = 20,
    flags: int = 0,
) -> Path:
    """`episodes` synthetic episodes, the first `flags` of them ending at the flag."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        ep = make_episode(rng, steps, level, background, flag=i < flags)
        ep.meta.update(seed=i, run_index=i)
        write_episode(folder / f"run-0001-{i:05d}.h5", ep)
    return folder


def fake_ppo_run(path: Path, seed: int, first_reached: dict, first_eval_reached: dict, evals: list) -> Path:
    """A PPO run folder as `lemario baseline ppo` leaves it: config, state, and metrics rows of 119 training
    episodes and of harness evaluations, `evals` of (env steps, mean max_x[, flag rate]), with a CI of +- 100."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": {"seed": seed, "eval_episodes": 10}, "git_commit": "x"}))
    (path / "state.json").write_text(
        json.dumps(
            {
                "first_reached": first_reached,
                "first_eval_reached": first_eval_reached,
                "best_eval": max(e[1] for e in evals),
                "env_steps": 200_000,
                "elapsed": 7200.0,
            }
        )
    )
    rows = [{"env_steps": 1000 * i, "time": i, "episode/max_x": 600 + 10 * i, "episode/flag": 0} for i in range(1, 120)]
    rows += [
        {
            "env_steps": n,
            "time": n / 1000,
            "eval/mean_max_x": m,
            "eval/ci95_low": m - 100,
            "eval/ci95_high": m + 100,
            "eval/flag_rate": flag[0] if flag else 0.0,
            "eval/max_max_x": m + 300,
        }
        for n, m, *flag in evals
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
