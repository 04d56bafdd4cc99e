"""The cross-entropy method over continuous action sequences (the push game's planners).

A diagonal Gaussian per step and action dimension; each iteration samples N sequences, projects them into the
action set, scores them in one call, and refits mean and std on the top `elite_frac` (std floored at `min_std`).
Every iteration's samples and costs are kept, so a player can show what the planner considered (the push game's
"dream field"). Mario's planner (`lemario.control.planner.cem`) is the categorical counterpart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lemario.core.errors import LemarioError


@dataclass(frozen=True)
class GaussianCEMConfig:
    samples: int = 96
    """Sequences per iteration. One sample and one iteration with a warm start play the warm start unsearched: the
    only sample is the warm mean itself (the push players' rule as their model reads it)."""
    elite_frac: float = 0.15
    """Share of the samples refit on (the seed's top 15%)."""
    iterations: int = 6
    init_std: float = 0.7
    min_std: float = 0.05

    def validate(self) -> None:
        if self.samples < 1 or self.iterations < 1 or not 0 < self.elite_frac <= 1 or self.init_std <= 0:
            raise LemarioError(
                f"CEM samples {self.samples} (>= 1), iterations {self.iterations} (>= 1), elite_frac "
                f"{self.elite_frac} (in (0, 1]), init_std {self.init_std} (> 0)"
            )

    @property
    def elites(self) -> int:
        return max(1, round(self.samples * self.elite_frac))


class CEMIteration(NamedTuple):
    actions: torch.Tensor
    """(N, H, A) the sampled sequences after projection."""
    costs: torch.Tensor
    """(N,)"""


class CEMPlan(NamedTuple):
    actions: torch.Tensor
    """(H, A) the lowest-cost sequence seen."""
    cost: float
    history: list[CEMIteration]


def gaussian_cem(
    cost: Callable[[torch.Tensor], torch.Tensor],
    horizon: int,
    action_dim: int,
    cfg: GaussianCEMConfig,
    gen: torch.Generator,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda a: a.clamp(-1, 1),
    mean: torch.Tensor | None = None,
) -> CEMPlan:
    """Minimize `cost` ((N, H, A) sequences -> (N,) costs) over sequences in the set `project` maps onto.

    A given `mean` (H, A) is a warm start: the search starts around it, and its first iteration scores the mean
    itself as one of the samples, so the plan is never worse than the warm start by the cost.
    """
    mu = torch.zeros(horizon, action_dim) if mean is None else mean.clone()  # (H, A)
    std = torch.full((horizon, action_dim), cfg.init_std)
    best, best_cost, history = mu, float("inf"), []
    for it in range(cfg.iterations):
        # Sample and score
        noise = torch.randn(cfg.samples, horizon, action_dim, generator=gen)
        if it == 0 and mean is not None:
            noise[0] = 0.0
        actions = project(mu + std * noise)  # (N, H, A)
        costs = cost(actions).float()  # (N,)
        history.append(CEMIteration(actions, costs))
        # Keep the best sequence seen
        i = int(costs.argmin())
        if float(costs[i]) < best_cost:
            best, best_cost = actions[i], float(costs[i])
        # Refit on the elites
        elite = actions[costs.topk(cfg.elites, largest=False).indices]  # (k, H, A)
        mu, std = elite.mean(0), elite.std(0, unbiased=False).clamp_min(cfg.min_std)
    return CEMPlan(best, best_cost, history)
