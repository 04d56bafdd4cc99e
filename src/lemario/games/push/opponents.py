"""Scripted players of the push game, and the thrust rules the data generator's regimes are made of.

A rule is called once per env step with the board state and its own index (0 amber, 1 cyan) and returns a 2-D
thrust. Scripted players read the true state this way; the world-model player reads only frames (`Seen`).

- `random`: a uniform thrust in the unit disc every step.
- `passive`: never moves.
- `chase_t`: offence. Drives around the T to the point behind it (the side away from its own goal), then pushes
  through the T's centre toward its goal.
- `adversarial`: spoils. Gets between the T and the opponent's goal and pushes the T straight away from that goal
  (maximizing the opponent's distance rather than minimizing its own), which leaves its disc parked on the
  opponent's side of the T, in the way of the next push. (A variant that spent turns blocking or ramming the
  opponent's disc won 5-6% against `chase_t`; pushing is what wins here, so the spoiler pushes too.)

Every rule steers with one proportional-derivative controller (`drive_to`) and goes around the T instead of through
it (`route`), so none is weak by accident (the round-robin table in docs/RESULTS.md measures each).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.push.board import DISC_RADIUS, DISC_SLICE, GOALS, T_ANGLE, T_POS, clip_thrust, t_extent

KP = 1 / 50
"""Thrust per unit of distance to the target (full thrust from 50 units away)."""
KD = 1 / 250
"""Braking per unit of speed (a held full thrust reaches ~300 units/s)."""
CLEARANCE = 8.0
"""Gap kept between a disc and the T while going around it."""
ARC = np.pi / 4
"""How far round the T one waypoint goes (radians)."""

Rule = Callable[[np.ndarray, int], np.ndarray]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.zeros_like(v)


def disc(state: np.ndarray, me: int) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity of player `me`'s disc."""
    sl = DISC_SLICE[me]
    return np.asarray(state[sl], np.float64), np.asarray(state[sl.start + 2 : sl.stop + 2], np.float64)


def drive_to(state: np.ndarray, me: int, target: np.ndarray) -> np.ndarray:
    """Thrust that brings the disc to `target` and stops it there."""
    pos, vel = disc(state, me)
    return clip_thrust(KP * (np.asarray(target) - pos) - KD * vel).astype(np.float32)


def t_reach(state: np.ndarray, direction: np.ndarray) -> float:
    """Distance from the T's centre to where a disc touching it along unit `direction` sits."""
    return t_extent(float(state[T_ANGLE]), direction) + DISC_RADIUS


def route(state: np.ndarray, me: int, target: np.ndarray) -> np.ndarray:
    """The next waypoint toward `target` that goes around the T rather than through it.

    When the straight path comes closer to the T than a disc can pass, the waypoint is a point on the T's clearance
    ring at most `ARC` radians further round, the shorter way round to the target's bearing.
    """
    pos, _ = disc(state, me)
    t = np.asarray(state[T_POS], np.float64)
    to_target = target - pos
    length2 = float(to_target @ to_target)
    along = float(np.clip((t - pos) @ to_target / length2, 0.0, 1.0)) if length2 > 1e-9 else 0.0
    closest = pos + along * to_target - t
    if np.linalg.norm(closest) >= _ring(state, closest) - 1.0:
        return target  # the straight path clears the T
    bearing = np.arctan2(*(pos - t)[::-1])
    turn = (np.arctan2(*(target - t)[::-1]) - bearing + np.pi) % (2 * np.pi) - np.pi
    way = bearing + np.sign(turn) * min(abs(turn), ARC)
    direction = np.array([np.cos(way), np.sin(way)])
    return t + direction * (_ring(state, direction) + CLEARANCE)


def _ring(state: np.ndarray, direction: np.ndarray) -> float:
    """How close to the T's centre a disc may pass along `direction` (its reach there plus a gap)."""
    return t_reach(state, _unit(direction)) + CLEARANCE


def push_toward(state: np.ndarray, me: int, point: np.ndarray) -> np.ndarray:
    """Thrust that pushes the T's centre toward `point`: get behind the T, then drive through its centre."""
    pos, _ = disc(state, me)
    t = np.asarray(state[T_POS], np.float64)
    u = _unit(np.asarray(point, np.float64) - t)
    behind = t - u * (t_reach(state, -u) + CLEARANCE)
    offset = pos - t
    lateral = abs(float(np.cross(u, offset)))
    if float(offset @ u) < 0 and lateral < 0.6 * DISC_RADIUS + 10 and np.linalg.norm(pos - behind) < 60:
        return clip_thrust(_unit(t - pos) * 2.0 + u).astype(np.float32)  # in position: push through the centre
    return drive_to(state, me, route(state, me, behind))


def chase_t(state: np.ndarray, me: int) -> np.ndarray:
    return push_toward(state, me, GOALS[me])


def adversarial(state: np.ndarray, me: int) -> np.ndarray:
    t = np.asarray(state[T_POS], np.float64)
    return push_toward(state, me, t + _unit(t - GOALS[1 - me]) * 200)


def passive(state: np.ndarray, me: int) -> np.ndarray:
    return np.zeros(2, np.float32)


def random_player(seed: int) -> Rule:
    rng = np.random.default_rng(seed)

    def play(state: np.ndarray, me: int) -> np.ndarray:
        r, phi = np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        return np.array([r * np.cos(phi), r * np.sin(phi)], np.float32)

    return play


SCRIPTED = ("random", "passive", "chase_t", "adversarial")


def scripted(name: str, seed: int = 0) -> Rule:
    """A scripted player's rule by name (`random` draws from `seed`)."""
    rules = {"passive": passive, "chase_t": chase_t, "adversarial": adversarial}
    if name == "random":
        return random_player(seed)
    if name not in rules:
        raise LemarioError(f"unknown opponent {name!r}: use one of {', '.join(SCRIPTED)}")
    return rules[name]


class Waypoints:
    """A person's turn: up to a few clicked points, driven through in order (full thrust toward each, braking at the
    last), straight lines rather than around the T, so a person can aim a push."""

    REACHED = 15.0

    def __init__(self, points):
        self.points = [np.asarray(p, np.float64) for p in points]

    def __call__(self, state: np.ndarray, me: int) -> np.ndarray:
        pos, _ = disc(state, me)
        while len(self.points) > 1 and np.linalg.norm(self.points[0] - pos) < self.REACHED:
            self.points.pop(0)
        if not self.points:
            return np.zeros(2, np.float32)
        if len(self.points) > 1:
            return _unit(self.points[0] - pos).astype(np.float32)
        return drive_to(state, me, self.points[0])
