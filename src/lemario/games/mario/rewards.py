"""The versioned reward spec: the seed's reward triple, computed from stored RAM labels.

Channels, per agent step t -> t+1:
- progress: x_pos[t+1] - x_pos[t]; a jump of more than MAX_STEP_DX pixels (respawn, pipe warp) counts 0.
- score: score[t+1] - score[t], in points (the game's score, so coins count 200 each).
- death: 1 on the step where Mario starts dying (is_dying goes 0 -> 1), else 0.
The env's scalar reward is progress - DEATH_PENALTY * death (gym-super-mario-bros' shape without its clock term).

Any change to these definitions must bump REWARD_SPEC_VERSION: a corpus labelled with another version is
relabelled from its stored RAM labels (`relabel`) or refused.
"""

from __future__ import annotations

import numpy as np

from lemario.games.mario.ram import LABELS

REWARD_SPEC_VERSION = 1
REWARD_CHANNELS = ("progress", "score", "death")
MAX_STEP_DX = 48  # Mario moves at most ~3 px per frame; more in one agent step is a teleport
DEATH_PENALTY = 15.0

_X, _SCORE, _DYING = (LABELS.index(k) for k in ("x_pos", "score", "is_dying"))


def reward_triple(label_table: np.ndarray) -> np.ndarray:
    """(T+1, len(LABELS)) labels of an episode -> (T, 3) float32 rewards (progress, score, death)."""
    lab = label_table.astype(np.int64)
    dx = np.diff(lab[:, _X])
    dx = np.where(np.abs(dx) > MAX_STEP_DX, 0, dx)
    dscore = np.diff(lab[:, _SCORE])
    death = (lab[1:, _DYING] == 1) & (lab[:-1, _DYING] == 0)
    return np.stack([dx, dscore, death], axis=-1).astype(np.float32)


def step_triple(prev: dict, cur: dict) -> tuple[float, float, float]:
    """The triple for one step from two `info` dicts (the env's per-step form of `reward_triple`)."""
    dx = cur["x_pos"] - prev["x_pos"]
    dx = 0 if abs(dx) > MAX_STEP_DX else dx
    return float(dx), float(cur["score"] - prev["score"]), float(cur["is_dying"] == 1 and prev["is_dying"] == 0)


def scalar_reward(triple: np.ndarray) -> np.ndarray:
    """The env's reward from the triple (..., 3) -> (...)."""
    return triple[..., 0] - DEATH_PENALTY * triple[..., 2]
