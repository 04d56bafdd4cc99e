"""The push game's turn cost: what a planning player minimizes, from the board at the turn's end (where its own
disc is, where the T is).

- `seed`: |own disc - T| + 2 |T - own goal| (the seed system's).
- `approach` (the default): the disc's distance to the point it pushes from, behind the T as seen from the own
  goal, measured around the T rather than through it (`to_front`), + 2 |T - own goal|. Over one turn's horizon the
  seed's cost rewards hugging the T from whichever side is nearest, which pushes the T the wrong way as often as
  not; this one rewards every step of the way round to the pushing side (measured: docs/RESULTS.md).
"""

from __future__ import annotations

import torch

from lemario.core.errors import LemarioError

COSTS = ("approach", "seed")
PUSH_REACH = 65.0
"""How far behind the T's centre the pushing point is (a disc touching the T's side, roughly)."""
T_RADIUS = 55.0
"""Radius of the circle the `approach` distance goes around."""


def around(p: torch.Tensor, q: torch.Tensor, radius: float) -> torch.Tensor:
    """Shortest path length from p to q (..., 2), both relative to a circle's centre, that stays outside it."""
    lp, lq = p.norm(dim=-1).clamp_min(radius), q.norm(dim=-1).clamp_min(radius)
    theta = torch.arccos(((p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1)).clamp_min(1e-6)).clamp(-1, 1))
    ap, aq = torch.arccos(radius / lp), torch.arccos(radius / lq)  # where each tangent touches the circle
    wrapped = (lp**2 - radius**2).sqrt() + (lq**2 - radius**2).sqrt() + radius * (theta - ap - aq)
    return torch.where(theta > ap + aq, wrapped, (p - q).norm(dim=-1))


def to_front(disc: torch.Tensor, t: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """How far the own disc at `disc` is from its pushing point behind the T at `t` (..., 2) as seen from `goal` (2,),
    measured around the T."""
    to_goal = goal - t
    u = to_goal / to_goal.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return around(disc - t, -u * PUSH_REACH, T_RADIUS)


def turn_cost(disc: torch.Tensor, t: torch.Tensor, goal: torch.Tensor, kind: str = "approach") -> torch.Tensor:
    """Cost of ending a turn with the own disc at `disc` and the T at `t` (..., 2), pushing toward `goal` (2,)."""
    if kind == "seed":
        return (disc - t).norm(dim=-1) + 2 * (goal - t).norm(dim=-1)
    if kind != "approach":
        raise LemarioError(f"unknown push cost {kind!r}: use one of {', '.join(COSTS)}")
    return to_front(disc, t, goal) + 2 * (goal - t).norm(dim=-1)
