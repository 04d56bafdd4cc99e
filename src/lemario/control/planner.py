"""Latent MPC: the cross-entropy method over discrete action sequences, rolled out through the world model.

`cem` is the optimizer alone: a categorical distribution per step (H, A), N sequences sampled from it, the
top-k refit it (mixed with the previous distribution by `smoothing`), and the best sequence seen is returned.
`LatentPlanner` scores sequences with the world model: the predictor rolls the N sequences forward in one
batch per step, predicting each distinct action prefix once (`rollout_shared`), the reward head turns each
predicted latent into progress, score and death, and an optional value function scores the last latent; or,
for goal tasks, the cost is the distance of the last latent to a goal latent (LeWorldModel's planning
objective). Receding horizon: the agent re-plans every `replan_every` steps.

With a policy trained in the same world model (`value`), the planner can also start from it (prior 'policy', as
TD-MPC2 plans around its actor): the policy's own sequences, sampled in imagination from the current state, are
candidates of the first round, and their per-step action frequencies are its distribution. The best sequence seen
is returned, so the plan scores at least as well as the policy's best sample under the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from lemario.control.imagination import RETURN_UNIT, ActorCritic, imagine, load_policy
from lemario.control.reward import RewardWeights, scalar_reward, survival_weighted
from lemario.core.device import PRECISIONS, module_device, precision_dtype
from lemario.core.errors import LemarioError
from lemario.model.world_model import WorldModel, decode_reward

PRIORS = ("uniform", "biased", "policy")


@dataclass(frozen=True)
class PlannerConfig:
    horizon: int = 15
    samples: int = 256
    elites: int = 32
    iterations: int = 3
    smoothing: float = 0.1
    """Weight of the previous distribution when refitting (0: the elites' frequencies alone)."""
    prior: str = "biased"
    """Initial per-step distribution: 'uniform'; 'biased' towards running right and jumping; 'policy': the policy of
    `value`'s sampled sequences (`policy_samples` of them, kept as candidates), mixed with 'biased' by `policy_mix`."""
    policy_samples: int = 32
    """prior 'policy': sequences the policy samples in imagination at each plan."""
    policy_mix: float = 0.1
    """prior 'policy': weight of the biased distribution in the first round's, so CEM still tries what the policy
    never does."""
    reward: RewardWeights = field(default_factory=RewardWeights)
    """The scalar reward in pixels (`lemario.control.reward`): death penalty, score weight."""
    discount: float = 0.99
    survival: bool = True
    """Weight each step's reward (and the value beyond the horizon) by the predicted probability of being alive
    before it (`lemario.control.reward.survival_weighted`); off: a plan that dies keeps collecting progress (the
    planner before issue 20)."""
    replan_every: int = 1
    precision: str = "auto"
    """Arithmetic of the rollouts: 'fp32'; 'bf16' (a bfloat16 copy of the predictor and reward head: 4-5x faster
    matmuls on CPUs with AMX, 2x plans with AVX-512 BF16); 'auto' is bf16 where the hardware computes it natively
    (`lemario.core.device.BF16_FLAGS`, CUDA), else fp32."""
    value: str = ""
    """A policy checkpoint (`lemario imagine`) trained on the same world model: its critic scores the last
    predicted latent, the value beyond the horizon ('' for none)."""
    min_action_share: float = 0.001
    """Plan only with actions that took at least this share of the world model's training corpus's steps
    (`lemario.model.world_model.known_actions`); 0: every action, as before issue 21."""

    def validate(self) -> None:
        if self.prior not in PRIORS:
            raise LemarioError(f"unknown planner prior {self.prior!r}: use {' or '.join(PRIORS)}")
        if self.precision not in PRECISIONS:
            raise LemarioError(f"unknown planner precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if (
            min(self.horizon, self.samples, self.iterations, self.replan_every) < 1
            or not 1 <= self.elites <= self.samples
        ):
            raise LemarioError(
                f"planner budget horizon {self.horizon}, samples {self.samples}, elites {self.elites}, iterations "
                f"{self.iterations}, replan every {self.replan_every}: all >= 1 and elites <= samples"
            )
        if self.prior == "policy" and not (self.value and 1 <= self.policy_samples < self.samples):
            raise LemarioError(
                "the planner's prior 'policy' needs --planner.value POLICY (a policy trained on the same world model) "
                f"and 1 <= --planner.policy-samples ({self.policy_samples}) < --planner.samples ({self.samples})"
            )
        if not 0 <= self.policy_mix <= 1:
            raise LemarioError(f"--planner.policy-mix {self.policy_mix} is not a weight in [0, 1]")
        if self.value and not Path(self.value).exists():
            raise LemarioError(
                f"no policy checkpoint at {self.value} for the planner's value: pass a policy.safetensors of "
                "`lemario imagine`"
            )


class CEMResult(NamedTuple):
    seq: torch.Tensor
    """(H,) the best sequence seen."""
    score: float
    extra: torch.Tensor | None
    """What the score function returned with that sequence's score (the planner: its predicted rewards (H, 4))."""
    probs: torch.Tensor
    """(H, A) the final distribution."""


Score = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""score(seqs (N, H) int64) -> (scores (N,), per-sequence extras (N, ...) or None)"""


def cem(
    score: Score, prior: torch.Tensor, cfg: PlannerConfig, generator: torch.Generator, keep: torch.Tensor | None = None
) -> CEMResult:
    """Maximize a score over action sequences.

    prior (H, A) initial probabilities; keep (k, H) extra candidates (the previous plan shifted, the policy's
    sequences) scored in the first round. Returns the best sequence seen over all rounds, its score and extra, and
    the final distribution.
    """
    probs = prior.clone()
    H, A = probs.shape
    best = CEMResult(prior.argmax(-1), -float("inf"), None, probs)
    for it in range(cfg.iterations):
        # Sample
        seqs = torch.multinomial(probs, cfg.samples, replacement=True, generator=generator).T  # (N, H)
        if it == 0 and keep is not None:
            seqs[: len(keep)] = keep
        # Score, and keep the best sequence seen
        scores, extra = score(seqs)  # (N,), (N, ...)
        top = scores.topk(min(cfg.elites, len(scores))).indices  # (k,)
        if scores[top[0]] > best.score:
            best = CEMResult(
                seqs[top[0]].clone(), float(scores[top[0]]), None if extra is None else extra[top[0]], probs
            )
        # Refit the distribution on the elites
        counts = torch.zeros(H, A).scatter_add_(1, seqs[top].T, torch.ones(H, len(top)))  # (H, A)
        probs = (1 - cfg.smoothing) * counts / len(top) + cfg.smoothing * probs
    return best._replace(probs=probs)


def planning_policy(path: Path, model: WorldModel) -> ActorCritic:
    """The actor-critic of a policy checkpoint trained on `model` (refused if trained on another), on its device."""
    ac, policy_model, _ = load_policy(path)
    theirs, ours = policy_model.state_dict(), model.state_dict()
    if theirs.keys() != ours.keys() or any(not torch.equal(theirs[k], ours[k].cpu()) for k in ours):
        raise LemarioError(
            f"the policy {path} was trained on another world model than the planner's: pass a policy of this one"
        )
    return ac.to(module_device(model))


def critic_value(ac: ActorCritic, model: WorldModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The critic of a policy trained on `model`, as latents (N, D) and the action before each (N,) -> value in
    pixels of progress (N,)."""

    @torch.no_grad()
    def value(z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return ac.value(model.state(z.float(), prev)) * RETURN_UNIT  # the critic learns returns in RETURN_UNIT px

    return value


Propose = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""propose(context (1, c, D), past (1, c), generator) -> sequences (k, H) to start the search from"""


def policy_proposals(ac: ActorCritic, model: WorldModel, samples: int, horizon: int) -> Propose:
    """The policy's own action sequences, each sampled step by step in imagination from the current context."""

    def propose(context: torch.Tensor, past: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        start = context.float().expand(samples, -1, -1)  # (k, c, D)
        between, prev = past[:, 1:].expand(samples, -1), past[:, 0].expand(samples)  # (k, c-1), (k,)
        return imagine(model, ac, start, between, prev, horizon, generator)[1]  # (k, H)

    return propose


def prior_probs(
    cfg: PlannerConfig, actions: list[tuple[str, ...]], allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """(horizon, A) initial distribution of a validated config; actions outside `allowed` (A,) bool get 0, so CEM
    never samples them."""
    if cfg.prior == "uniform":
        p = torch.ones(len(actions))
    else:  # biased (also what the policy prior is mixed with): favour right, rarely noop
        p = torch.tensor([3.0 if "right" in a else (0.5 if a else 1.0) for a in actions])
    if allowed is not None:
        p = p * allowed
    return (p / p.sum()).expand(cfg.horizon, -1).clone()


def fold_batchnorm(net: nn.Sequential) -> None:
    """In place: every eval-mode BatchNorm1d that follows a Linear in `net` is folded into that Linear's weights
    (y = gamma * (Wx + b - mean) / sqrt(var + eps) + beta is again linear) and replaced by an Identity."""
    for i in range(1, len(net)):
        lin, bn = net[i - 1], net[i]
        if isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()  # (out,)
            lin.weight.data.mul_(scale[:, None])
            lin.bias.data.sub_(bn.running_mean).mul_(scale).add_(bn.bias)
            net[i] = nn.Identity()


def planning_copy(model: WorldModel, dtype: torch.dtype) -> WorldModel:
    """The rollouts' own copy of a world model: eval mode, the predictor's projector BatchNorm folded into its Linear
    (one op fewer per predicted step), in the planning dtype."""
    rollout = copy.deepcopy(model).eval()
    with torch.no_grad():
        fold_batchnorm(rollout.pred_proj.net)
    return rollout.to(dtype).requires_grad_(False)


def rollout_shared(
    model: WorldModel, context: torch.Tensor, past: torch.Tensor, seqs: torch.Tensor, pad: int = 32
) -> torch.Tensor:
    """`model.rollout` of N sequences from one context, predicting each distinct action prefix once.

    context (1, c, D) real latents, past (1, c) the action before each of them, seqs (N, H) -> (N, H, D). CEM
    samples share prefixes (at most A distinct first actions; later iterations concentrate), so a step predicts the
    distinct (window, action) pairs only: a tree of prefixes, each node holding its window of <= history latents
    and the action before each. The batch of distinct pairs is padded to a multiple of `pad` rows: a new batch
    size per step costs more in kernel set-up than the rows it saves.
    """
    N, A, h = len(seqs), model.cfg.n_actions, model.history
    win_z = context[:, -h:]  # (1, w, D)
    win_b = past[:, -win_z.shape[1] :]  # (1, w)
    node = torch.zeros(N, dtype=torch.int64, device=seqs.device)  # each sequence's node at the current depth
    preds, rows, first = [], [], 0  # per step: the distinct latents (U', D); each sequence's row among all of them
    for t in range(seqs.shape[1]):
        children, node = torch.unique(node * A + seqs[:, t], return_inverse=True)  # (U,), (N,)
        padded = min(N, -(-len(children) // pad) * pad)  # few distinct batch sizes: oneDNN builds a kernel per shape
        children = torch.cat(
            [children, children[:1].expand(padded - len(children))]
        )  # (U',): the repeats are never read
        parent, action = children // A, children % A
        z, b = win_z[parent], win_b[parent]  # (U', w, D), (U', w)
        a = torch.cat([b[:, 1:], action[:, None]], dim=1)  # (U', w) the action after each latent
        nxt = model.predict(z, a, b[:, 0])[:, -1]  # (U', D)
        win_z = torch.cat([z, nxt[:, None]], dim=1)[:, -h:]  # (U', w', D)
        win_b = torch.cat([b, action[:, None]], dim=1)[:, -win_z.shape[1] :]  # (U', w')
        preds.append(nxt)
        rows.append(node + first)
        first += padded
    return torch.cat(preds)[torch.stack(rows, dim=1)]  # (N, H, D)


class LatentPlanner:
    """CEM/MPC through a world model: sequences rolled out by its predictor, scored by its reward head."""

    def __init__(
        self,
        model: WorldModel,
        cfg: PlannerConfig,
        actions: list[tuple[str, ...]],
        value: Callable | None = None,
        allowed: torch.Tensor | None = None,
        propose: Propose | None = None,
    ):
        """allowed (A,) bool: the actions plans may hold (`known_actions`); None: all. propose: the policy's
        sequences (prior 'policy')."""
        cfg.validate()
        self.model, self.cfg, self.value, self.propose = model.eval(), cfg, value, propose
        self.dtype = precision_dtype(cfg.precision, module_device(model))
        self.rollout_model = planning_copy(self.model, self.dtype)  # only its predictor and reward head run
        self.prior = prior_probs(cfg, actions, allowed)
        self.discounts = cfg.discount ** torch.arange(cfg.horizon, dtype=torch.float32)  # (H,)

    @torch.no_grad()  # (plan() runs it in inference mode; a direct call returns ordinary tensors)
    def rewards(
        self, context: torch.Tensor, past: torch.Tensor, seqs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted latents (N, H, D) and decoded rewards (N, H, 4) of sequences seqs (N, H) from a context
        (1, c, D) with past (1, c) the action taken before each of its latents."""
        z = rollout_shared(self.rollout_model, context.to(self.dtype), past, seqs)  # (N, H, D)
        return z.float(), decode_reward(self.rollout_model.reward(z, seqs).float())

    def objective(self, context: torch.Tensor, past: torch.Tensor, goal: torch.Tensor | None = None) -> Score:
        """score(seqs (N, H)) -> (total (N,), predicted rewards (N, H, 4)): the discounted scalar reward plus the
        critic's value beyond the horizon, or for a goal the negative squared distance of the last latent to it."""
        cfg = self.cfg

        def score(seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z, r = self.rewards(context, past, seqs)  # (N, H, D), (N, H, 4)
            if goal is not None:
                return -(z[:, -1] - goal).square().sum(-1), r  # LeWM: squared distance of the last latent to the goal
            if cfg.survival:
                total, alive = survival_weighted(r, cfg.reward, self.discounts)  # (N,), (N,)
            else:
                total, alive = (scalar_reward(r, cfg.reward) * self.discounts).sum(-1), torch.ones(len(r))
            if self.value is not None:
                total = total + cfg.discount**cfg.horizon * alive * self.value(z[:, -1], seqs[:, -1])
            return total, r

        return score

    @torch.inference_mode()
    def plan(
        self,
        context: torch.Tensor,
        past: torch.Tensor,
        generator: torch.Generator,
        keep: torch.Tensor | None = None,
        goal: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float, torch.Tensor]:
        """Best action sequence (H,), its score, and its predicted rewards (H, 4): progress px, score points,
        P(death), P(flag)."""
        prior, keep = self.prior, None if keep is None else keep[None]  # (H, A), (k, H)
        if self.propose is not None:
            proposed = self.propose(context, past, generator)  # (k, H)
            frequencies = nn.functional.one_hot(proposed, prior.shape[1]).float().mean(0)  # (H, A)
            prior = (1 - self.cfg.policy_mix) * frequencies + self.cfg.policy_mix * prior
            keep = proposed if keep is None else torch.cat([keep, proposed])
        best = cem(self.objective(context, past, goal), prior, self.cfg, generator, keep)
        return best.seq, best.score, best.extra
