"""`PushGame`: the push game as a Gymnasium environment, in two modes.

- `match`: two players alternate turns of `steps_per_turn` env steps, amber first, `turns` turns each. The action
  is the acting player's 2-D thrust; the idle disc stays where physics leaves it. When the last turn ends, the player
  whose goal is nearer the T's centre wins, unless the two distances differ by less than `draw_margin` (a draw).
  Reward: +1 when amber wins, -1 when cyan wins, 0 otherwise (given on the last step).
- `goal`: amber acts every step (cyan's disc stays where it is unless pushed), toward a goal state passed as
  `reset(options={"goal": state})`; success when amber's disc and the T's centre are within `goal_tolerance` units of
  the goal's and the T's angle within `goal_angle` (the Push-T criterion of the LeWorldModel paper). Reward: -1
  per step until success (which terminates), truncated after `max_steps`.

Observations are (obs_size, obs_size, 3) uint8 frames; `info` carries the 14-float `state`, the `actor` (0 amber,
1 cyan), the `turn` (0-based, counting both players' turns) and `step_in_turn`. A start is reproducible from the
reset seed; `reset(options={"state": s})` starts from a given state instead. `seen(n)` is what a player sees
before it acts: the state, the frames so far, both discs' thrusts between them and the boards the frames show (so
a player that reads pixels can see them at its own size: `Seen.frames_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.push.board import (
    DISC_SLICE,
    PLAYERS,
    T_ANGLE,
    T_POS,
    Board,
    clip_thrust,
    goal_distances,
    random_start,
    wrap_angle,
)
from lemario.games.push.render import render

MODES = ("match", "goal")


@dataclass(frozen=True)
class PushConfig:
    mode: str = "match"
    """'match' (two players alternate turns) or 'goal' (amber alone, toward a goal state)."""
    obs_size: int = 64
    """Side of the model's frames in pixels."""
    turns: int = 5
    """Turns per player in a match."""
    steps_per_turn: int = 5
    """Env steps (0.1 s each) per turn."""
    draw_margin: float = 8.0
    """A match is a draw when the T's distances to the two goals differ by less than this (units)."""
    max_steps: int = 50
    """Goal mode: steps before truncation (the LeWorldModel evaluation's budget)."""
    goal_tolerance: float = 20.0
    goal_angle: float = math.pi / 9
    subpixel: bool = False
    """Frames show the discs and the T to a fraction of a pixel (`lemario.games.push.render`); without it their
    positions round to 2 board units, a quarter of a 64-px frame's pixel."""

    def validate(self) -> None:
        if self.mode not in MODES:
            raise LemarioError(f"unknown push mode {self.mode!r}: use one of {', '.join(MODES)}")
        if min(self.obs_size, self.turns, self.steps_per_turn, self.max_steps) < 1:
            raise LemarioError("obs_size, turns, steps_per_turn and max_steps must be >= 1")

    @property
    def match_steps(self) -> int:
        return 2 * self.turns * self.steps_per_turn


def match_result(state: np.ndarray, margin: float) -> int:
    """The winner of a match ending in `state`: 0 amber, 1 cyan, -1 a draw."""
    d = goal_distances(state)
    if abs(d[0] - d[1]) < margin:
        return -1
    return int(d[1] < d[0])


def goal_reached(state: np.ndarray, goal: np.ndarray, tolerance: float, angle: float) -> bool:
    """Amber's disc and the T within `tolerance` of the goal state's, and the T's angle within `angle`."""
    near = all(np.linalg.norm(state[sl] - goal[sl]) <= tolerance for sl in (DISC_SLICE[0], T_POS))
    return near and abs(wrap_angle(float(state[T_ANGLE] - goal[T_ANGLE]))) <= angle


@dataclass(frozen=True)
class Seen:
    """What a player sees before acting: scripted players read `state`, the world-model player the pixels."""

    state: np.ndarray
    """(14,) the board state."""
    me: int
    """The acting player: 0 amber, 1 cyan."""
    step_in_turn: int
    frames: np.ndarray
    """(n, H, W, 3) the last n frames (fewer at the start), oldest first."""
    thrusts: np.ndarray
    """(n - 1, 4) both discs' thrusts between those frames (amber x, y, cyan x, y)."""
    boards: np.ndarray
    """(n, 14) the board states those frames show."""
    subpixel: bool = False
    """Whether the game draws its frames to a fraction of a pixel (`PushConfig.subpixel`)."""

    def frames_at(self, size: int, subpixel: bool = False) -> np.ndarray:
        """(n, size, size, 3) the same frames as a camera of `size` px drawing with or without `subpixel` sees them (a
        model reads frames as it trained on them, whatever the game renders for others)."""
        if size == self.frames.shape[1] and subpixel == self.subpixel:
            return self.frames
        return np.stack([render(board, size, subpixel=subpixel) for board in self.boards])


class PushGame(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: PushConfig = PushConfig(), render_mode: str | None = None):
        config.validate()
        self.config = config
        self.render_mode = render_mode
        self.board = Board()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (config.obs_size, config.obs_size, 3), np.uint8)
        self.goal: np.ndarray | None = None
        self.steps = 0
        self.frames: list[np.ndarray] = []
        self.thrusts: list[np.ndarray] = []
        self.boards: list[np.ndarray] = []
        """The board state each of `frames` shows."""

    @property
    def actor(self) -> int:
        """Who acts on the next step: amber (0) or cyan (1)."""
        if self.config.mode == "goal":
            return 0
        return (self.steps // self.config.steps_per_turn) % len(PLAYERS)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        start = options.get("state")
        self.board.set_state(random_start(self.np_random) if start is None else start)
        self.goal = None if options.get("goal") is None else np.asarray(options["goal"], np.float32)
        if self.config.mode == "goal" and self.goal is None:
            raise LemarioError("goal mode needs reset(options={'goal': state}): a 14-float state to reach")
        self.steps = 0
        obs = self._obs()
        self.frames, self.thrusts, self.boards = [obs], [], [self.board.state()]
        return obs, self._info()

    def step(self, action):
        limit = self.config.match_steps if self.config.mode == "match" else self.config.max_steps
        if self.steps >= limit:
            raise LemarioError("the episode is over: call reset() before step()")
        thrusts = np.zeros((len(PLAYERS), 2), np.float32)
        thrusts[self.actor] = clip_thrust(np.asarray(action, np.float32).reshape(2))
        touched = self.board.step(thrusts, contacts=True)
        self.steps += 1
        state = self.board.state()
        info = self._info(state)
        info["touched"] = touched  # (2,) which disc touched the T during the step
        obs = self._obs(state)
        self.frames.append(obs)
        self.boards.append(state)
        self.thrusts.append(thrusts.reshape(-1))  # what the board applied
        if self.config.mode == "match":
            over = self.steps >= limit
            reward = 0.0
            if over:
                info["winner"] = match_result(state, self.config.draw_margin)
                reward = {0: 1.0, 1: -1.0}.get(info["winner"], 0.0)
            return obs, reward, over, False, info
        success = goal_reached(state, self.goal, self.config.goal_tolerance, self.config.goal_angle)
        info["success"] = success
        return obs, 0.0 if success else -1.0, success, self.steps >= limit and not success, info

    def seen(self, history: int = 3) -> Seen:
        """What the next actor sees: the state, the last `history` frames and the thrusts between them."""
        n = min(history, len(self.frames))
        thrusts = np.array(self.thrusts[len(self.thrusts) - (n - 1) :], np.float32).reshape(n - 1, 4)
        frames, boards = np.stack(self.frames[-n:]), np.stack(self.boards[-n:])
        step_in_turn = self.steps % self.config.steps_per_turn
        return Seen(self.board.state(), self.actor, step_in_turn, frames, thrusts, boards, self.config.subpixel)

    def _info(self, state: np.ndarray | None = None) -> dict:
        state = self.board.state() if state is None else state
        return {
            "state": state,
            "actor": self.actor,
            "turn": self.steps // self.config.steps_per_turn,
            "step_in_turn": self.steps % self.config.steps_per_turn,
            "goal_distances": goal_distances(state),
        }

    def _obs(self, state: np.ndarray | None = None) -> np.ndarray:
        return render(
            self.board.state() if state is None else state, self.config.obs_size, subpixel=self.config.subpixel
        )

    def render(self):
        return render(self.board.state(), 512)
