"""The one scalar reward that control maximizes, in pixels of progress, from the reward head's triple.

    r = progress_px + score_weight * score / 100 - death_penalty * P(death)

The planner scores its sequences with it and imagination trains its critic on it (in units of PROGRESS_SCALE px,
where symlog is near linear; `imagination.RETURN_UNIT`), so a death penalty means the same to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RewardWeights:
    death_penalty: float = 50.0
    """Pixels of progress that a certain death costs."""
    score_weight: float = 0.0
    """Pixels of progress that 100 points of score are worth."""


def scalar_reward(decoded: torch.Tensor, weights: RewardWeights) -> torch.Tensor:
    """(..., 3) decoded rewards (progress px, score points, death probability) -> (...) pixels."""
    progress, score, death = decoded.unbind(-1)
    return progress + weights.score_weight * score / 100 - weights.death_penalty * death


def survival_weighted(
    decoded: torch.Tensor, weights: RewardWeights, discounts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, 3) decoded rewards of a sequence, (H,) discounts -> (the discounted sum of each step's reward
    weighted by the probability of being alive before it (...), the probability of being alive after the last (...)).

    A plan that dies at step 3 stops collecting progress there: step t counts prod_{s<t} (1 - P(death)_s) of its
    reward, and its death penalty as the probability of dying exactly at t."""
    death = decoded[..., 2]  # (..., H)
    alive = torch.cumprod(torch.cat([torch.ones_like(death[..., :1]), 1 - death], dim=-1), dim=-1)  # (..., H+1)
    total = (alive[..., :-1] * scalar_reward(decoded, weights) * discounts).sum(-1)
    return total, alive[..., -1]
