"""How far a baseline run got, and when: the env step at which it first reached x >= 700 / 1500 / 2000 and the flag.

Kept in a PPO run's state.json twice: `first_reached` (a training episode got there: exploration, and luck) and
`first_eval_reached` (an evaluation's mean max_x got there, or half its episodes took the flag: what the policy does).
"""

from __future__ import annotations

MILESTONES = (700, 1500, 2000)
KEYS = tuple(str(m) for m in MILESTONES) + ("flag",)
"""state.json's milestone names."""


def record_milestones(
    reached: dict[str, int], step: int, x: float, flag: bool, marks: tuple[int, ...] = MILESTONES
) -> None:
    """Note `step` for each milestone (each of `marks`, then 'flag') passed by x / flag that `reached` lacks."""
    for m in marks:
        if x >= m:
            reached.setdefault(str(m), step)
    if flag:
        reached.setdefault("flag", step)
