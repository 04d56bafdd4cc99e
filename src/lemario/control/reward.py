"""The one scalar reward that control maximizes, in pixels of progress, from the reward head's triple.

    r = progress_px + score_weight * score / 100 - death_penalty * P(death) + flag_bonus * P(flag)

A step ends the episode with probability 1 - (1 - P(death)) (1 - P(flag)) (`ends`): a death or the flagpole.

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
    flag_bonus: float = 200.0
    """Pixels of progress that touching the flagpole is worth (a choice: after it the episode ends, so without a
    bonus the flag is worth no more than stopping just before it)."""


def scalar_reward(decoded: torch.Tensor, weights: RewardWeights) -> torch.Tensor:
    """(..., 4) decoded rewards (progress px, score points, P(death), P(flag)) -> (...) pixels."""
    progress, score, death, flag = decoded.unbind(-1)
    return progress + weights.score_weight * score / 100 - weights.death_penalty * death + weights.flag_bonus * flag


def ends(decoded: torch.Tensor) -> torch.Tensor:
    """(..., 4) decoded rewards -> (...) the probability that the step ends the episode: a death or the flag."""
    return 1 - (1 - decoded[..., 2]) * (1 - decoded[..., 3])


def survival_weighted(
    decoded: torch.Tensor, weights: RewardWeights, discounts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, 4) decoded rewards of a sequence, (H,) discounts -> (the discounted sum of each step's reward
    weighted by the probability that the episode still runs before it (...), that probability after the last (...)).

    A plan that dies at step 3 stops collecting progress there: step t counts prod_{s<t} (1 - ends_s) of its
    reward, and its death penalty as the probability of dying exactly at t."""
    end = ends(decoded)  # (..., H)
    alive = torch.cumprod(torch.cat([torch.ones_like(end[..., :1]), 1 - end], dim=-1), dim=-1)  # (..., H+1)
    total = (alive[..., :-1] * scalar_reward(decoded, weights) * discounts).sum(-1)
    return total, alive[..., -1]
