"""Scripted data-collection policies: uniform random, the seed's right-biased random with held jumps, and that
biased play with some macros holding any action (`covering`), so a corpus holds every action of the set.

A policy maps the env's `info` (RAM labels) to an action index; it never looks at pixels, so collection costs
only emulation. Each policy owns a numpy Generator, seeded per episode by the collector.
"""

from __future__ import annotations

import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.mario.actions import action_set

POLICIES = ("uniform", "biased", "covering")


class UniformPolicy:
    """Every action equally likely at every step."""

    name = "uniform"

    def __init__(self, action_set_name: str, rng: np.random.Generator):
        self.n = len(action_set(action_set_name))
        self.rng = rng

    def reset(self) -> None:
        pass

    def act(self, info: dict) -> int:
        return int(self.rng.integers(self.n))


class BiasedPolicy:
    """Right-biased random play built from short macros, like the seed's baseline (mean x 658 on 1-1).

    Each macro is held for several steps: run right (sometimes with B), a jump with A held for a random number
    of steps (the height of a jump grows with how long A is held, and A must be released before the next jump),
    or a short pause / step back. Works with any action set; missing buttons fall back to the closest action.
    """

    name = "biased"
    # (probability, steps low, steps high)
    RUN, JUMP, PAUSE = (0.40, 2, 8), (0.50, 3, 12), (0.10, 1, 3)

    def __init__(self, action_set_name: str, rng: np.random.Generator):
        actions = action_set(action_set_name)
        index = {tuple(sorted(a)): i for i, a in enumerate(actions)}

        def find(*options: tuple[str, ...]) -> int:
            for buttons in options:
                if tuple(sorted(buttons)) in index:
                    return index[tuple(sorted(buttons))]
            raise LemarioError(f"action set {action_set_name} has none of {options}")

        self.run = [find(("right",)), find(("right", "B"), ("right",))]
        self.jump = [find(("right", "A")), find(("right", "A", "B"), ("right", "A"))]
        self.pause = [find(()), find(("left",), ())]
        self.rng = rng
        self.reset()

    def reset(self) -> None:
        self._queue: list[int] = []

    def macro(self) -> list[int]:
        u = self.rng.random()
        if u < self.RUN[0]:
            return [self.run[self.rng.integers(2)]] * int(self.rng.integers(self.RUN[1], self.RUN[2] + 1))
        if u < self.RUN[0] + self.JUMP[0]:
            held = int(self.rng.integers(self.JUMP[1], self.JUMP[2] + 1))
            return [self.jump[self.rng.integers(2)]] * held + [self.run[0]]  # release A so the next jump can start
        return [self.pause[self.rng.integers(2)]] * int(self.rng.integers(self.PAUSE[1], self.PAUSE[2] + 1))

    def act(self, info: dict) -> int:
        if not self._queue:
            self._queue = self.macro()
        return self._queue.pop()


class CoveringPolicy(BiasedPolicy):
    """`BiasedPolicy` whose macros, with probability ANY[0], hold an action drawn uniformly from the whole set for
    ANY[1]-ANY[2] steps instead.

    The biased macros press 6 of the complex set's 12 actions (never A alone, left with A or B, down, up); a world
    model learns what an action does only from steps that took it, and controllers choosing among all 12 found the
    never-seen ones' errors (issue 21). Held for a few steps, as the game's momentum and the jump latch need.
    """

    name = "covering"
    ANY = (0.15, 1, 8)

    def __init__(self, action_set_name: str, rng: np.random.Generator):
        self.n = len(action_set(action_set_name))
        super().__init__(action_set_name, rng)

    def macro(self) -> list[int]:
        if self.rng.random() < self.ANY[0]:
            return [int(self.rng.integers(self.n))] * int(self.rng.integers(self.ANY[1], self.ANY[2] + 1))
        return super().macro()


def make_policy(
    name: str, action_set_name: str, rng: np.random.Generator
) -> UniformPolicy | BiasedPolicy | CoveringPolicy:
    if name == "uniform":
        return UniformPolicy(action_set_name, rng)
    if name == "biased":
        return BiasedPolicy(action_set_name, rng)
    if name == "covering":
        return CoveringPolicy(action_set_name, rng)
    raise LemarioError(f"unknown policy {name!r}: use one of {', '.join(POLICIES)}")
