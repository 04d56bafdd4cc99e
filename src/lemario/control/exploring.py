"""Exploration mixed into any agent: biased-random macros that take over for a few steps, everywhere or only in
windows of Mario's x (before the obstacles where the current policies die, so the corpus shows other actions there
and the policies' own play everywhere else)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from lemario.control.policies import BiasedPolicy
from lemario.core.errors import LemarioError


def x_windows(flat: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """`(x0, x1, x0, x1, ...)` as windows `((x0, x1), ...)`; one line naming the fix for an odd count or an empty
    window."""
    if len(flat) % 2:
        raise LemarioError(f"--explore-x {' '.join(map(str, flat))}: give pairs X0 X1 (an even count of numbers)")
    pairs = tuple((int(a), int(b)) for a, b in zip(flat[::2], flat[1::2], strict=True))
    for a, b in pairs:
        if not 0 <= a < b:
            raise LemarioError(f"--explore-x window {a} {b} is empty: each pair is X0 X1 with 0 <= X0 < X1")
    return pairs


END_BIN = 100
"""Width in px of the bins in which `end_windows` counts ending places."""
END_LEAD = 200
"""How far before an ending place's bin its window starts: the approach, where another action avoids the end."""


def end_windows(ends: list[int], n: int) -> tuple[int, ...]:
    """Windows before the `n` places where most episodes ended (x at a death or the step limit), as flat pairs: the
    commonest END_BIN-px bins (ties: the earlier), each from END_LEAD px before its bin to the bin's end, in order of
    x (overlapping windows stay apart: each is a place's own); () without ends."""
    counts = Counter(x // END_BIN for x in ends)
    top = sorted(sorted(counts, key=lambda b: (-counts[b], b))[:n])
    return tuple(v for b in top for v in (max(0, b * END_BIN - END_LEAD), (b + 1) * END_BIN))


class ExploringAgent:
    """Any agent, with biased-random macros mixed in: each step, with probability `epsilon`, a whole macro of
    `BiasedPolicy` (held for its 1-13 steps) replaces the agent's actions. With `explore_x` (flat pairs, see
    `x_windows`) a macro starts only while Mario's x lies in one of the windows [x0, x1) (a running one plays out).
    The agent still sees every observation (planners keep their history); its own choice is overridden while a
    macro runs, and an agent with `executed(action)` is told what the env took instead."""

    def __init__(self, agent, epsilon: float, action_set_name: str, explore_x: tuple[int, ...] = ()):
        if not 0 <= epsilon <= 1:
            raise LemarioError(f"exploration rate {epsilon} is not a probability: pass a value in [0, 1]")
        self.agent, self.epsilon, self.action_set = agent, epsilon, action_set_name
        self.windows = x_windows(explore_x)

    def reset(self, seed: int) -> None:
        self.agent.reset(seed)
        self.rng = np.random.default_rng([seed, 0xE])
        self.macros = BiasedPolicy(self.action_set, self.rng)
        self.queue: list[int] = []
        self.explored = 0

    def act(self, obs: np.ndarray, info: dict) -> int:
        own = self.agent.act(obs, info)
        if not self.queue and self.rng.random() < self.epsilon and self.inside(info):
            self.queue = self.macros.macro()
        if self.queue:
            self.explored += 1
            action = self.queue.pop()
            if action != own and hasattr(self.agent, "executed"):
                self.agent.executed(action)
            return action
        return own

    def inside(self, info: dict) -> bool:
        """Whether a macro may start here: anywhere without windows, else with Mario's x in one of them."""
        return not self.windows or any(a <= info["x_pos"] < b for a, b in self.windows)

    def episode_stats(self) -> dict:
        inner = self.agent.episode_stats() if hasattr(self.agent, "episode_stats") else {}
        return {**inner, "explored_steps": self.explored}
