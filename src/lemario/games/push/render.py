"""Drawing a board state: small RGB frames for the model, 512 px for people.

A frame is drawn at `SUPERSAMPLE` times its size and area-downscaled, so a 64 px frame shows a disc as a smooth
~5 px blob rather than an aliased one. Everything is a function of the 14-float state: the same state gives the
same pixels (the world model's frames and the browser's agree).

Where the discs and the T are drawn rounds to a pixel of the supersampled drawing (a quarter of a 64-px frame's
pixel, 2 board units), so a move of less than that shows as nothing or as a whole step: a T that a turn's candidate
pushes 0.7 units further than another looks the same or 2 units apart. With `subpixel` they are drawn to
1/2^`SUBPIXEL_BITS` of the drawing's pixel, and a fraction of a pixel's move shows in the shading of their edges.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from lemario.games.push.board import DISC_RADIUS, DISC_SLICE, GOALS, SIZE, T_ANGLE, T_POS, t_polygons

BACKGROUND = (22, 24, 33)
WALL_COLOUR = (70, 74, 90)
T_COLOUR = (225, 225, 215)
PLAYER_COLOURS = ((255, 170, 30), (40, 200, 240))
"""Amber, cyan (RGB)."""
GOAL_RADIUS = 28.0
SUPERSAMPLE = 4
SUBPIXEL_BITS = 4


def render(
    state: np.ndarray, size: int = 64, t_colour: tuple[int, int, int] = T_COLOUR, subpixel: bool = False
) -> np.ndarray:
    """(size, size, 3) uint8 RGB picture of a 14-float board state (`t_colour`: the T's, for the cosmetic change
    of `lemario analyze surprise`; `subpixel`: the discs and the T where they are to a fraction of a pixel)."""
    k = max(1, SUPERSAMPLE if size < 256 else 1)
    big = size * k
    scale = big / SIZE
    img = np.empty((big, big, 3), np.uint8)
    img[:] = BACKGROUND
    cv2.rectangle(img, (0, 0), (big - 1, big - 1), WALL_COLOUR, max(1, round(4 * scale)))
    for goal, colour in zip(GOALS, PLAYER_COLOURS):
        centre = _px(goal, scale)
        cv2.circle(img, centre, round(GOAL_RADIUS * scale), colour, max(1, round(4 * scale)), cv2.LINE_AA)
    c, s = math.cos(float(state[T_ANGLE])), math.sin(float(state[T_ANGLE]))
    rot = np.array([[c, s], [-s, c]])  # row vectors: body -> world
    shift = SUBPIXEL_BITS if subpixel else 0  # fractional bits of the moving shapes' coordinates
    fixed = scale * (1 << shift)
    for poly in t_polygons():
        world = poly @ rot + np.asarray(state[T_POS], np.float64)
        cv2.fillPoly(img, [np.round(world * fixed).astype(np.int32)], t_colour, cv2.LINE_AA, shift)
    for sl, colour in zip(DISC_SLICE, PLAYER_COLOURS):
        cv2.circle(img, _px(state[sl], fixed), round(DISC_RADIUS * fixed), colour, -1, cv2.LINE_AA, shift)
    if k > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _px(point, scale: float) -> tuple[int, int]:
    return round(float(point[0]) * scale), round(float(point[1]) * scale)
