"""The RAM map of Super Mario Bros and the physics labels every later stage reads from it.

All addresses are CPU RAM (0x000-0x7FF). `labels(ram)` works on one RAM snapshot (2048,) or on a whole
episode (T, 2048) at once, so a corpus can be relabelled from its stored RAM without the emulator.
"""

from __future__ import annotations

import numpy as np

RAM_SIZE = 0x800

# Addresses (FACTS.md, checked against the game in tests/test_ram_labels.py).
X_PAGE, X_SCREEN = 0x6D, 0x86  # x = page * 256 + x within the page
Y_PIXEL, Y_VIEWPORT = 0x3B8, 0xB5  # y on screen; viewport > 1 means Mario fell below the screen
X_VEL, Y_VEL = 0x57, 0x9F  # signed bytes; y_vel < 0 while rising
FLOAT_STATE = 0x1D  # 0 on the ground, 1 jumping, 2 falling, 3 sliding down the flagpole
PLAYER_STATE = 0x0E  # 8 normal, 0x0B dying, 6 dead
LIVES, POWERUP = 0x75A, 0x756  # powerup: 0 small, 1 big, 2 fire
WORLD, STAGE, AREA = 0x75F, 0x75C, 0x760
OPER_MODE = 0x770  # 0 title, 1 playing, 2 world end (castle cleared), 3 game over
PRELEVEL_TIMER = 0x7A0
TIME_DIGITS = slice(0x7F8, 0x7FB)
SCORE_DIGITS = slice(0x7DD, 0x7E3)  # six digits; the display adds a constant trailing 0
COIN_DIGITS = slice(0x7ED, 0x7EF)

# The five enemy slots (measured on 1-1: walking right into the first goomba, its slot turns active at Mario's
# x 161, and he dies at x 296 with the goomba at 304; tests/games/test_ram_labels.py).
ENEMY_ACTIVE = slice(0x0F, 0x14)  # non-zero while the slot's enemy is in play
ENEMY_X_PAGE, ENEMY_X_SCREEN = slice(0x6E, 0x73), slice(0x87, 0x8C)  # enemy x in the level, as Mario's

PLAYER_NORMAL, PLAYER_DYING, PLAYER_DEAD = 0x08, 0x0B, 0x06
FLOAT_FLAGPOLE = 3

N_LEVELS = 32
"""SMB's levels: worlds 1-8 x stages 1-4."""


def level_index(world, stage):
    """A level's index 1..N_LEVELS from its 1-based world and stage (the labels' and `parse_level`'s), arrays or
    ints alike; 0 is left free for 'no level' (a level-conditioned world model's unknown level)."""
    return (world - 1) * 4 + stage


def level_name(index: int) -> str:
    """'W-S' of a level index (`level_index`'s inverse)."""
    return f"{(index - 1) // 4 + 1}-{(index - 1) % 4 + 1}"


# Column order of the per-step label table stored in the corpus.
LABELS = (
    "x_pos",
    "y_pos",
    "x_vel",
    "y_vel",
    "on_ground",
    "is_dying",
    "lives",
    "score",
    "coins",
    "time",
    "powerup",
    "world",
    "stage",
    "flag_get",
    "float_state",
    "player_state",
)


# y_pos is the height above the bottom of the screen: 255 - y_pixel while Mario is on screen (viewport 1, as
# gym-super-mario-bros reports it), continuing above the top (viewport 0) and below the bottom (viewport 2,
# negative: falling into a pit) instead of wrapping around.


def _digits(ram: np.ndarray, where: slice) -> np.ndarray:
    """Decimal number stored one digit per byte, most significant first."""
    d = ram[..., where].astype(np.int64)  # (..., n)
    powers = 10 ** np.arange(d.shape[-1] - 1, -1, -1)
    return d @ powers


def labels(ram: np.ndarray) -> dict[str, np.ndarray]:
    """Physics and game labels from RAM of shape (2048,) or (T, 2048); each value has shape () or (T,)."""
    ram = np.asarray(ram)
    if ram.shape[-1] != RAM_SIZE:
        raise ValueError(f"RAM must have {RAM_SIZE} bytes in its last axis, got shape {ram.shape}")
    r = ram.astype(np.int64)
    y_pixel, viewport = r[..., Y_PIXEL], r[..., Y_VIEWPORT]
    y_pos = 511 - 256 * viewport - y_pixel
    player_state, float_state = r[..., PLAYER_STATE], r[..., FLOAT_STATE]
    return {
        "x_pos": r[..., X_PAGE] * 256 + r[..., X_SCREEN],
        "y_pos": y_pos,
        "x_vel": ram[..., X_VEL].view(np.int8).astype(np.int64),
        "y_vel": ram[..., Y_VEL].view(np.int8).astype(np.int64),
        "on_ground": (float_state == 0).astype(np.int64),
        "is_dying": ((player_state == PLAYER_DYING) | (player_state == PLAYER_DEAD) | (viewport > 1)).astype(np.int64),
        "lives": r[..., LIVES],
        "score": _digits(ram, SCORE_DIGITS) * 10,
        "coins": _digits(ram, COIN_DIGITS),
        "time": _digits(ram, TIME_DIGITS),
        "powerup": r[..., POWERUP],
        "world": r[..., WORLD] + 1,
        "stage": r[..., STAGE] + 1,
        "flag_get": ((float_state == FLOAT_FLAGPOLE) | (r[..., OPER_MODE] == 2)).astype(np.int64),
        "float_state": float_state,
        "player_state": player_state,
    }


ENEMY_FAR = 256
"""enemy_dx when no enemy in play is ahead of Mario: one screen."""
ENEMY_BEHIND, ENEMY_NEAR = -16, 64
"""Enemies count from 16 px behind Mario (overlapping him) on; 'near' is within 64 px ahead (~10 steps at a run)."""


def enemy_labels(ram: np.ndarray) -> dict[str, np.ndarray]:
    """Where the enemies are, from RAM (2048,) or (T, 2048): 'enemy_dx', the level-x distance from Mario to the
    nearest enemy in play at least ENEMY_BEHIND px ahead (ENEMY_FAR when there is none; capped there), and
    'enemy_near', 1 when that distance is at most ENEMY_NEAR. Not corpus labels: probes compute them from the
    stored RAM."""
    r = np.asarray(ram).astype(np.int64)
    mario = r[..., X_PAGE] * 256 + r[..., X_SCREEN]  # (...)
    dx = r[..., ENEMY_X_PAGE] * 256 + r[..., ENEMY_X_SCREEN] - mario[..., None]  # (..., 5)
    ahead = (r[..., ENEMY_ACTIVE] != 0) & (dx >= ENEMY_BEHIND)
    nearest = np.where(ahead, dx, ENEMY_FAR).min(axis=-1).clip(max=ENEMY_FAR)
    return {"enemy_dx": nearest, "enemy_near": (nearest <= ENEMY_NEAR).astype(np.int64)}


def label_table(ram: np.ndarray) -> np.ndarray:
    """Labels as an int32 table (T, len(LABELS)) in LABELS order, the corpus's storage format."""
    lab = labels(ram)
    return np.stack([lab[k] for k in LABELS], axis=-1).astype(np.int32)


def _int_digits(b: bytes, where: slice) -> int:
    n = 0
    for d in b[where]:
        n = n * 10 + d
    return n


def info_from_ram(ram: np.ndarray | bytes) -> dict[str, int]:
    """Labels of one snapshot as Python ints: the same values as `labels`, ~10x faster for a single step.

    The env calls this every step; tests/test_ram_labels.py checks it against `labels` on real episodes.
    """
    b = bytes(ram)
    viewport, player_state, float_state = b[Y_VIEWPORT], b[PLAYER_STATE], b[FLOAT_STATE]
    signed = lambda v: v - 256 if v > 127 else v  # noqa: E731
    return {
        "x_pos": b[X_PAGE] * 256 + b[X_SCREEN],
        "y_pos": 511 - 256 * viewport - b[Y_PIXEL],
        "x_vel": signed(b[X_VEL]),
        "y_vel": signed(b[Y_VEL]),
        "on_ground": int(float_state == 0),
        "is_dying": int(player_state in (PLAYER_DYING, PLAYER_DEAD) or viewport > 1),
        "lives": b[LIVES],
        "score": _int_digits(b, SCORE_DIGITS) * 10,
        "coins": _int_digits(b, COIN_DIGITS),
        "time": _int_digits(b, TIME_DIGITS),
        "powerup": b[POWERUP],
        "world": b[WORLD] + 1,
        "stage": b[STAGE] + 1,
        "flag_get": int(float_state == FLOAT_FLAGPOLE or b[OPER_MODE] == 2),
        "float_state": float_state,
        "player_state": player_state,
    }
