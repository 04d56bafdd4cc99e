"""The push game's board: a 512 x 512 top-down pymunk world with two discs, a T-shaped block and two goals.

Physics (ours; the seed states only pymunk, 512 units, dt 0.01 and a 10 Hz control):
- No gravity: the board is seen from above. Everything slides and slows by linear and angular damping
  (`DAMPING`, the fraction of velocity kept per second), the stand-in for floor friction.
- A disc's action is a 2-D thrust in the unit disc, applied as a force of `THRUST` units for every physics substep
  of an env step (`SUBSTEPS` x `DT` = 0.1 s). Held, it approaches ~300 units/s (time constant 1/3 s), so a
  disc crosses the board in about two turns.
- The T (a 120 x 30 bar over a 30 x 90 stem, twice a disc's mass) moves only when something pushes it.
- Four walls keep everything on the board.

State vector (`STATE_NAMES`, 14 floats): both discs' position and velocity, then the T's centre of mass, angle
(radians, wrapped to (-pi, pi]) and linear and angular velocity. `Board.set_state` restores one exactly enough for
planning (positions and velocities; pymunk's contact caches start empty).
"""

from __future__ import annotations

import math

import numpy as np
import pymunk

SIZE = 512.0
"""Board side in units (also the pixels of the people's view)."""
DT = 0.01
SUBSTEPS = 10
"""Physics steps per env step: the control runs at 10 Hz."""
DAMPING = 0.05
THRUST = 900.0
DISC_RADIUS = 20.0
DISC_MASS = 1.0
T_BAR = (120.0, 30.0)
T_STEM = (30.0, 90.0)
T_MASS = 2.0
WALL = 4.0
GOALS = np.array([[24.0, SIZE / 2], [SIZE - 24.0, SIZE / 2]], np.float32)
"""Goal points of amber (player 0, left) and cyan (player 1, right)."""
PLAYERS = ("amber", "cyan")
STATE_NAMES = (
    "amber_x", "amber_y", "amber_vx", "amber_vy",
    "cyan_x", "cyan_y", "cyan_vx", "cyan_vy",
    "t_x", "t_y", "t_angle", "t_vx", "t_vy", "t_w",
)  # fmt: skip
STATE_DIM = len(STATE_NAMES)
DISC_SLICE = (slice(0, 2), slice(4, 6))
"""Where each player's disc position sits in the state vector."""
T_POS = slice(8, 10)
T_ANGLE = 10


def t_polygons() -> list[np.ndarray]:
    """The T's two boxes in its body frame, centred on its centre of mass: [(4, 2) bar, (4, 2) stem]."""
    (bw, bh), (sw, sh) = T_BAR, T_STEM
    bar = np.array([[-bw / 2, 0], [bw / 2, 0], [bw / 2, bh], [-bw / 2, bh]])
    stem = np.array([[-sw / 2, bh], [sw / 2, bh], [sw / 2, bh + sh], [-sw / 2, bh + sh]])
    cy = (bw * bh * bh / 2 + sw * sh * (bh + sh / 2)) / (bw * bh + sw * sh)  # the centre of mass's height
    return [bar - [0, cy], stem - [0, cy]]


def t_extent(angle: float, direction: np.ndarray) -> float:
    """How far the T reaches from its centre of mass along a unit `direction` (world frame) at `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    pts = np.concatenate(t_polygons()) @ np.array([[c, s], [-s, c]])  # (8, 2) body -> world rotation
    return float((pts @ direction).max())


def wrap_angle(a: float) -> float:
    return float((a + math.pi) % (2 * math.pi) - math.pi)


class Board:
    """The pymunk world. `step(thrusts)` advances one env step with a (2, 2) thrust per disc (amber, cyan)."""

    def __init__(self):
        self.space = pymunk.Space()
        self.space.damping = DAMPING
        self.space.iterations = 20
        s, w = SIZE, WALL
        for a, b in (((0, 0), (s, 0)), ((s, 0), (s, s)), ((s, s), (0, s)), ((0, s), (0, 0))):
            seg = pymunk.Segment(self.space.static_body, a, b, w)
            seg.elasticity, seg.friction = 0.5, 0.5
            self.space.add(seg)
        self.discs = []
        for _ in PLAYERS:
            body = pymunk.Body(DISC_MASS, pymunk.moment_for_circle(DISC_MASS, 0, DISC_RADIUS))
            shape = pymunk.Circle(body, DISC_RADIUS)
            shape.elasticity, shape.friction = 0.2, 0.6
            self.space.add(body, shape)
            self.discs.append(body)
        polys = t_polygons()
        areas = [abs(np.cross(p[1] - p[0], p[3] - p[0])) for p in polys]
        self.t = pymunk.Body()
        self.space.add(self.t)
        for poly, area in zip(polys, areas):
            shape = pymunk.Poly(self.t, [tuple(v) for v in poly])
            shape.mass = T_MASS * area / sum(areas)
            shape.elasticity, shape.friction = 0.1, 0.6
            self.space.add(shape)

    def set_state(self, state: np.ndarray) -> None:
        """Place both discs and the T as a 14-float state vector says (velocities included)."""
        state = np.asarray(state, np.float64)
        for i, body in enumerate(self.discs):
            body.position = tuple(state[4 * i : 4 * i + 2])
            body.velocity = tuple(state[4 * i + 2 : 4 * i + 4])
            body.angular_velocity = 0.0
        self.t.position = tuple(state[8:10])
        self.t.angle = float(state[10])
        self.t.velocity = tuple(state[11:13])
        self.t.angular_velocity = float(state[13])
        for body in (*self.discs, self.t):
            self.space.reindex_shapes_for_body(body)

    def state(self) -> np.ndarray:
        out = []
        for body in self.discs:
            out += [*body.position, *body.velocity]
        t = self.t
        out += [*t.position, wrap_angle(t.angle), *t.velocity, t.angular_velocity]
        return np.array(out, np.float32)

    def step(self, thrusts: np.ndarray, contacts: bool = False) -> np.ndarray | None:
        """One env step: each disc's thrust (clipped to the unit disc) held for `SUBSTEPS` physics steps. With
        `contacts`, -> (2,) whether each disc touched the T during it (a check after every physics step, which makes
        a step slower: the simulator planner's rollouts leave it off)."""
        thrusts = clip_thrust(np.asarray(thrusts, np.float64).reshape(len(PLAYERS), 2))
        touched = np.zeros(len(PLAYERS), bool) if contacts else None
        for _ in range(SUBSTEPS):
            for body, a in zip(self.discs, thrusts):
                body.force = (float(a[0]) * THRUST, float(a[1]) * THRUST)
            self.space.step(DT)
            if contacts:
                self.t.each_arbiter(lambda arbiter: self._touch(arbiter, touched))
        return touched

    def _touch(self, arbiter: pymunk.Arbiter, touched: np.ndarray) -> None:
        for shape in arbiter.shapes:
            if shape.body in self.discs:
                touched[self.discs.index(shape.body)] = True


def clip_thrust(a: np.ndarray) -> np.ndarray:
    """Thrusts (..., 2) scaled back into the unit disc (the direction kept)."""
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.maximum(norm, 1.0)


def random_start(rng: np.random.Generator) -> np.ndarray:
    """A match's starting state: the T near the centre at any angle, each disc somewhere free of it and the walls."""
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = SIZE / 2 + rng.uniform(-48, 48, 2)
    state[T_ANGLE] = rng.uniform(-math.pi, math.pi)
    placed: list[np.ndarray] = []
    for sl in DISC_SLICE:
        while True:
            p = rng.uniform(DISC_RADIUS + 2 * WALL, SIZE - DISC_RADIUS - 2 * WALL, 2)
            if np.linalg.norm(p - state[T_POS]) > 120 and all(np.linalg.norm(p - q) > 3 * DISC_RADIUS for q in placed):
                break
        state[sl] = p
        placed.append(p)
    return state


def goal_distances(state: np.ndarray) -> np.ndarray:
    """(2,) distance from the T's centre to amber's and to cyan's goal."""
    return np.linalg.norm(GOALS - np.asarray(state)[T_POS], axis=-1)


MOVED = 8.0
"""A turn moved the T when its centre travelled more than this (units): one pixel of the model's 64-px frames."""


def turn_motion(states: np.ndarray, steps_per_turn: int) -> np.ndarray:
    """(T+1, 14) board states of whole turns -> (T / steps_per_turn,) how far the T's centre went over each turn."""
    t = np.asarray(states)[::steps_per_turn, T_POS]
    return np.linalg.norm(np.diff(t, axis=0), axis=-1)


HEAD_NAMES = ("amber_x", "amber_y", "cyan_x", "cyan_y", "t_x", "t_y", "t_cos", "t_sin")
"""What the world model's state head reads from a latent: positions scaled to [-1, 1], the T's angle as a unit
vector (the seed's 8 outputs)."""


def head_targets(states: np.ndarray) -> np.ndarray:
    """(..., 14) board states -> (..., 8) state-head targets (`HEAD_NAMES`)."""
    states = np.asarray(states, np.float32)
    pos = np.concatenate([states[..., 0:2], states[..., 4:6], states[..., 8:10]], axis=-1) / (SIZE / 2) - 1
    angle = states[..., T_ANGLE : T_ANGLE + 1]
    return np.concatenate([pos, np.cos(angle), np.sin(angle)], axis=-1).astype(np.float32)


def head_positions(out):
    """(..., 8) state-head outputs (numpy or torch) -> (..., 3, 2) positions in units: amber, cyan, the T."""
    pos = (out[..., :6] + 1) * (SIZE / 2)
    return pos.reshape(*pos.shape[:-1], 3, 2)


def head_state(now: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
    """(8,) state-head outputs now and one env step before -> (14,) a board state for the scripted rules: positions
    and the T's angle read, velocities by difference over the step (zero without `before`)."""

    def read(out: np.ndarray) -> tuple[np.ndarray, float]:
        return np.asarray(head_positions(np.asarray(out, np.float64))), math.atan2(float(out[7]), float(out[6]))

    pos, angle = read(now)
    vel, spin = np.zeros((3, 2)), 0.0
    if before is not None:
        pos0, angle0 = read(before)
        step = SUBSTEPS * DT
        vel, spin = (pos - pos0) / step, wrap_angle(angle - angle0) / step
    state = np.zeros(STATE_DIM, np.float32)
    for i, sl in enumerate(DISC_SLICE):
        state[sl] = pos[i]
        state[sl.start + 2 : sl.stop + 2] = vel[i]
    state[T_POS], state[T_ANGLE], state[11:13], state[13] = pos[2], angle, vel[2], spin
    return state
