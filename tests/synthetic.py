"""A tiny synthetic corpus that needs no emulator: a bright square that actions push around an 84x84 frame.

Its labels follow the corpus schema (x_pos, y_pos, x_vel, y_vel, on_ground, ...), so world-model training,
probes and diagnostics run end to end on it in seconds.
"""

from pathlib import Path

import numpy as np

from lemario.data.corpus import Episode, write_episode
from lemario.games.mario.ram import LABELS
from lemario.games.mario.rewards import episode_rewards

PUSH = {0: (0, 0), 1: (1, 0), 2: (-1, 0), 3: (0, 1), 4: (0, -1)}  # action -> velocity change


def make_episode(rng: np.random.Generator, steps: int, level: str = "1-1", background: int = 20) -> Episode:
    """One episode of the square on `level` (its world and stage labels), drawn over a `background` grey."""
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
    meta = {
        "seed": 0,
        "policy": "synthetic",
        "level": level,
        "backend": "synthetic",
        "action_set": "right-only",  # five actions, as PUSH has
        "n_steps": steps,
        "max_x": int(labels[:, 0].max()),
        "flag_get": 0,
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
    folder: Path, episodes: int = 12, steps: int = 40, seed: int = 0, level: str = "1-1", background: int = 20
) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        ep = make_episode(rng, steps, level, background)
        ep.meta.update(seed=i, run_index=i)
        write_episode(folder / f"run-0001-{i:05d}.h5", ep)
    return folder
