"""Action sets: each action is a set of NES buttons held for the whole frame-skip.

right-only (5), simple (7) and complex (12, the seed's "12 buttons") follow gym-super-mario-bros' lists,
so agents and numbers carry over from that ecosystem.
"""

from __future__ import annotations

import numpy as np

from lemario.core.errors import LemarioError

# NES controller byte: one bit per button, as the console reads it.
BUTTON_BITS = {
    "A": 0x01,
    "B": 0x02,
    "select": 0x04,
    "start": 0x08,
    "up": 0x10,
    "down": 0x20,
    "left": 0x40,
    "right": 0x80,
}

_RIGHT_ONLY = [(), ("right",), ("right", "A"), ("right", "B"), ("right", "A", "B")]
_SIMPLE = _RIGHT_ONLY + [("A",), ("left",)]
_COMPLEX = _SIMPLE + [("left", "A"), ("left", "B"), ("left", "A", "B"), ("down",), ("up",)]

ACTION_SETS: dict[str, list[tuple[str, ...]]] = {"right-only": _RIGHT_ONLY, "simple": _SIMPLE, "complex": _COMPLEX}


def action_set(name: str) -> list[tuple[str, ...]]:
    """Buttons of each action in the named set."""
    if name not in ACTION_SETS:
        raise LemarioError(f"unknown action set {name!r}: use one of {', '.join(ACTION_SETS)}")
    return ACTION_SETS[name]


def button_byte(buttons: tuple[str, ...]) -> int:
    """Controller byte for a set of buttons."""
    byte = 0
    for b in buttons:
        byte |= BUTTON_BITS[b]
    return byte


def action_bytes(name: str) -> list[int]:
    """Controller byte of each action in the named set."""
    return [button_byte(a) for a in action_set(name)]


def holds(name: str, button: str) -> np.ndarray:
    """(A,) bool: which actions of the named set hold `button`."""
    return np.array([button in buttons for buttons in action_set(name)])


def action_label(buttons: tuple[str, ...]) -> str:
    return "+".join(buttons) if buttons else "noop"
