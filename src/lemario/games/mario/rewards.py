"""The versioned reward spec: the seed's reward triple and the flag, computed from stored RAM labels.

Channels, per agent step t -> t+1:
- progress: x_pos[t+1] - x_pos[t]; a jump of more than MAX_STEP_DX pixels (respawn, pipe warp) counts 0.
- score: score[t+1] - score[t], in points (the game's score, so coins count 200 each).
- death (v2): 1 when frame t+1 is doomed: from the step at which death is certain to the death itself (`doomed`),
  else 0. v1 marked only the step where Mario starts dying, which for a pit comes once he is already below the
  screen, several steps after nothing could save him.
- flag (v3): 1 on the step at which Mario touches the flagpole (`flag_get` turns on; the env's episode ends there),
  else 0. Before v3 the reward head never saw the flag: progress alone says nothing of it.
The env cannot see the future, so its per-step form (`step_rewards`) marks the onset of dying; its scalar reward is
progress - DEATH_PENALTY * death (gym-super-mario-bros' shape without its clock term), unchanged by the flag.

Any change to these definitions must bump REWARD_SPEC_VERSION: a corpus labelled with another version is
relabelled from its stored RAM labels (`relabel`) or refused.
"""

from __future__ import annotations

import numpy as np

from lemario.games.mario.ram import LABELS

REWARD_SPEC_VERSION = 3
REWARD_CHANNELS = ("progress", "score", "death", "flag")
MAX_STEP_DX = 48  # Mario moves at most ~3 px per frame; more in one agent step is a teleport
DEATH_PENALTY = 15.0
PIT_Y = 63
"""y_pos below which Mario is inside a pit: he stands at 79 on the floor; at 63 his feet are a tile below its top,
under the pit's walls, where nothing can hold him (checked on 1-1's corpus: no grounded frame below 63)."""
ENEMY_STEPS = 2
"""Steps before the contact with an enemy counted as doomed: the labelled warning, a choice (not measured as
certain: a jump may still escape one step before a contact)."""

_X, _Y, _SCORE, _DYING, _FLAG = (LABELS.index(k) for k in ("x_pos", "y_pos", "score", "is_dying", "flag_get"))


def death_onset(label_table: np.ndarray) -> tuple[int, bool]:
    """The frame where Mario starts dying (-1 when he does not) and whether it is a pit: a pit death is seen
    through the viewport, Mario below the screen."""
    dying = np.flatnonzero(label_table[:, _DYING] == 1)
    if not len(dying):
        return -1, False
    onset = int(dying[0])
    return onset, bool(label_table[onset, _Y] < 0)


def doomed(label_table: np.ndarray) -> np.ndarray:
    """(T+1,) bool: the frames from which the episode's death is certain, through its end.

    A pit death: the last unbroken stretch of frames below PIT_Y before the onset of dying. Any other death (an enemy,
    the clock): ENEMY_STEPS frames before the onset. An episode without a death has none.
    """
    out = np.zeros(len(label_table), bool)
    onset, pit = death_onset(label_table)
    if onset < 0:
        return out
    start = max(0, onset - ENEMY_STEPS)
    if pit:
        above = np.flatnonzero(label_table[: onset + 1, _Y] >= PIT_Y)
        start = int(above[-1]) + 1 if len(above) else 0
    out[start:] = True
    return out


def episode_rewards(label_table: np.ndarray) -> np.ndarray:
    """(T+1, len(LABELS)) labels of an episode -> (T, len(REWARD_CHANNELS)) float32 rewards (progress, score,
    death, flag)."""
    lab = label_table.astype(np.int64)
    dx = np.diff(lab[:, _X])
    dx = np.where(np.abs(dx) > MAX_STEP_DX, 0, dx)
    dscore = np.diff(lab[:, _SCORE])
    flag = (lab[1:, _FLAG] == 1) & (lab[:-1, _FLAG] == 0)
    return np.stack([dx, dscore, doomed(lab)[1:], flag], axis=-1).astype(np.float32)


def step_rewards(prev: dict, cur: dict) -> tuple[float, float, float, float]:
    """The channels for one step from two `info` dicts (the env's per-step form of `episode_rewards`: its death is
    the onset of dying, the one death signal that needs no future)."""
    dx = cur["x_pos"] - prev["x_pos"]
    dx = 0 if abs(dx) > MAX_STEP_DX else dx
    onset = cur["is_dying"] == 1 and prev["is_dying"] == 0
    flag = cur["flag_get"] == 1 and prev["flag_get"] == 0
    return float(dx), float(cur["score"] - prev["score"]), float(onset), float(flag)
