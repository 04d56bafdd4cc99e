"""The corpus's real states an imagination policy learns from: where its imagined rollouts start (`corpus_starts`),
and the steps of the episodes that reached the flag, which it may imitate (`imitation_batches`, `imitation_loss`).

Self-imitation (`lemario imagine --imitate W`): the actor-critic learns only from imagined returns, so where the world
model misjudges an obstacle it never pays for what kills there (the shipped agent's model puts P(death) at 3% on
the goombas after the long jump, where its agent dies most; session 50). The corpus holds actions that did pass:
every step of every flag-reaching episode. Their negative log-likelihood under pi, at the encoded real state, is
added to the actor's loss with weight W (behaviour cloning filtered to the run's own successes). It uses only play
the run has already paid for; a corpus without a flag-reaching episode gives no term. `--imitate-x LO HI` narrows
it to one stretch of the level, where the model is blind: the steps at x in [LO, HI) of every episode that got to
HI (at the pit after the staircase a jump at running speed crosses 73% of the time, at walking speed 29%, and the
world models cannot tell them apart; session 42). Measured (docs/RESULTS.md, sessions 56-57): off by default.
Cloning the successes of weaker earlier policies costs a flywheel's policies 22 flag points; continuing the shipped
agent on its own play, it holds the agent's level where plain continuation collapses into a pit, and lifts it no
further; narrowed to the pit's approach (2300-2500) it costs 24 flag points and 956 px: the policies die earlier,
at enemies and the first pits, and rarely reach the one it was meant for.
"""

from __future__ import annotations

import numpy as np
import torch

from lemario.core.device import module_device
from lemario.data.buffer import EpisodeBuffer, window_probabilities, with_deaths_share
from lemario.games.mario.ram import LABELS


def _windows(buffer: EpisodeBuffer, history: int) -> np.ndarray:
    """Starts of every window of `history` frames (history-1 steps) within one episode."""
    return buffer.window_starts(history - 1) if history > 1 else np.arange(len(buffer))


def corpus_starts(
    world_model, buffer: EpisodeBuffer, batch: int, balance_levels: bool = False, death: tuple[float, int] = (0.0, 0)
):
    """Start states: encoded real frame stacks (with the predictor's history) sampled from the corpus (each level
    equally often with balance_levels; a share death[0] of them from the death[1] steps before a death)."""
    c = world_model.history
    valid = _windows(buffer, c)
    p = window_probabilities(buffer, valid, balance_levels=True) if balance_levels else None
    if death[0]:  # by each window's last frame, the start itself
        p = with_deaths_share(buffer, valid + c - 1, p, *death)

    device = module_device(world_model)

    def starts(rng: np.random.Generator):
        sample = buffer.sample(batch, c - 1, world_model.cfg.frame_stack, rng, valid=valid, p=p)
        with torch.no_grad():
            level = torch.from_numpy(sample["level"]).to(device)  # (B,)
            z = world_model.encode(torch.from_numpy(sample["obs"]).to(device), level)  # (B, c, D)
        return z, torch.from_numpy(sample["actions"]).to(device), torch.from_numpy(sample["prev"]).to(device)

    return starts


def success_windows(
    buffer: EpisodeBuffer, history: int, allowed: torch.Tensor | None = None, x: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Starts of the (history-1)-step windows whose last frame belongs to a flag-reaching episode and was followed by
    an action the policy may take (allowed (A,) bool; None: any); with x = (lo, hi), hi > 0, only those whose last
    frame is at x_pos in [lo, hi) of an episode that got to hi (or the flag)."""
    valid = _windows(buffer, history)
    last = valid + history - 1  # (n,) the frame whose action is imitated
    taken = buffer.actions[last]  # (n,), -1 on an episode's last frame
    lo, hi = x
    if hi:
        at = buffer.labels[last, LABELS.index("x_pos")]  # (n,)
        keep = buffer.passed(last, hi) & (at >= lo) & (at < hi) & (taken >= 0)
    else:
        keep = buffer.flagged(last) & (taken >= 0)
    if allowed is not None:
        keep &= allowed.cpu().numpy()[np.maximum(taken, 0)]
    return valid[keep]


def imitation_batches(
    world_model, buffer: EpisodeBuffer, batch: int, allowed: torch.Tensor | None = None, x: tuple[int, int] = (0, 0)
):
    """(draw, steps): draw(rng) -> (states (B, F), actions (B,)), real states of the corpus's successful steps
    (`success_windows`; the world model's state of the encoded window's last frame) and the action taken there, and
    how many such steps there are; (None, 0) if the corpus has none."""
    c = world_model.history
    valid = success_windows(buffer, c, allowed, x)
    if not len(valid):
        return None, 0
    device = module_device(world_model)

    def draw(rng: np.random.Generator):
        sample = buffer.sample(batch, c - 1, world_model.cfg.frame_stack, rng, valid=valid)
        before_last = sample["actions"][:, -1] if c > 1 else sample["prev"]  # (B,)
        with torch.no_grad():
            level = torch.from_numpy(sample["level"]).to(device)
            z = world_model.encode(torch.from_numpy(sample["obs"]).to(device), level)  # (B, c, D)
            s = world_model.state(z[:, -1], torch.from_numpy(before_last).to(device))  # (B, F)
        return s, torch.from_numpy(sample["next"]).to(device)

    return draw, len(valid)


def imitation_loss(ac, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean negative log-likelihood of the real actions (B,) at the real states (B, F) under the actor; metrics: it
    and how often the actor's likeliest action is the one taken."""
    dist = ac.dist(states)
    nll = -dist.log_prob(actions).mean()
    agree = (dist.probs.argmax(-1) == actions).float().mean()
    return nll, {"imitate/nll": nll.item(), "imitate/agree": agree.item()}
