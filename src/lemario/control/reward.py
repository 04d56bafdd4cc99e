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
