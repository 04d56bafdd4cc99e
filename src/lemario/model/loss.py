"""The world model's loss, a small pure function: next-latent prediction + lambda * SIGReg (+ the reward head's, the
state head's and its token reader's, and the disagreement ensemble's losses).

No EMA, no stop-gradient: the target latents come from the same encoder the gradient flows through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lemario.model.sigreg import sigreg
from lemario.model.world_model import PROGRESS_SCALE, SCORE_SCALE, WorldModel


@dataclass(frozen=True)
class LossConfig:
    free_running: bool = True
    """Feed the predictor its own outputs over the K steps (the seed's K=4 finding) instead of teacher forcing."""
    context: int = 1
    """Real latents a free-running window starts from (the push game: the predictor's history, which shows the
    velocities one frame cannot); the other K+1-context latents are predicted."""
    sigreg_lambda: float = 0.1
    sigreg_projections: int = 1024
    reward_weight: float = 1.0
    """Weight of the reward head's loss (0 trains the JEPA alone)."""
    death_weight: float = 1.0
    """Weight of the positive (doomed) steps in the death loss: they are a few percent of all steps."""
    flag_weight: float = 20.0
    """Weight of the positive steps in the flag loss: one step per episode that reaches the flag."""
    reward_detach: bool = False
    """Train the reward head on detached predicted latents: its loss then shapes the head alone, not the encoder
    and predictor."""
    state_weight: float = 10.0
    """Weight of the state head's loss, for models that have one (the seed's lambda = 10), and of its token reader's."""
    motion_weight: float = 0.0
    """Weight of the state head's motion loss (models with a state head): the displacement it reads from the window's
    last context latent to each later latent, real and predicted, against the real one, each state dimension in
    units of its real displacement's spread in the batch. The position loss weighs a push's few units on the T
    as nothing against the head's reading error; a planner compares plans from one start, so the displacement is
    what it needs. 0 leaves it out."""
    level_dropout: float = 0.2
    """A level-conditioned model (`--model.level-embedding`) trains on this share of windows with their level hidden
    (the unknown level's vector), which is what it plays on a level it never trained on."""


def world_model_loss(
    model: WorldModel, batch: dict[str, torch.Tensor], cfg: LossConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """batch: obs (B, K+1, S, H, W[, C]) uint8, actions (B, K[, A]), prev (B[, A]) (the action before the first
    frame); with a reward head rewards (B, K, 4) float32, with a state head state (B, K+1, state_head) float32;
    optionally level (B,) each window's level index (a level-conditioned model reads it)."""
    obs, actions, prev = batch["obs"], batch["actions"], batch["prev"]
    level = _shown_level(model, batch.get("level"), cfg.level_dropout, generator)
    if model.cfg.state_points:
        emb, tokens_read = model.encode_read(obs, level)  # (B, K+1, D), (B, K+1, state_head)
    else:
        emb = model.encode(obs, level)  # (B, K+1, D)
    c = cfg.context if cfg.free_running else 1
    if cfg.free_running:
        preds = model.rollout(emb[:, :c], actions, prev)  # (B, K+1-c, D), from the first c real latents
    else:
        preds = model.teacher_forced(emb, actions, prev)  # (B, K, D)
    pred_loss = F.mse_loss(preds.float(), emb[:, c:].float())
    sig = sigreg(emb.transpose(0, 1), num_proj=cfg.sigreg_projections, generator=generator)  # per step, averaged
    loss = pred_loss + cfg.sigreg_lambda * sig
    metrics = {"loss/pred": pred_loss, "loss/sigreg": sig}
    if model.cfg.reward_head:
        reward_loss, reward_metrics = _reward_loss(model, preds, actions[:, c - 1 :], batch["rewards"][:, c - 1 :], cfg)
        loss = loss + cfg.reward_weight * reward_loss
        metrics.update(reward_metrics)
    if model.cfg.ensemble:
        ensemble_loss = _ensemble_loss(model, emb.detach(), actions, prev)
        loss = loss + ensemble_loss
        metrics["loss/ensemble"] = ensemble_loss
    if model.cfg.state_head:
        target = batch["state"].float()  # (B, K+1, S)
        read, read_preds = model.decode_state(emb).float(), model.decode_state(preds).float()
        real = F.mse_loss(read, target)
        predicted = F.mse_loss(read_preds, target[:, c:])
        loss = loss + cfg.state_weight * (real + predicted)
        metrics.update({"loss/state": real, "loss/state_predicted": predicted})
        if model.cfg.state_points:
            tokens = F.mse_loss(tokens_read.float(), target)
            loss = loss + cfg.state_weight * tokens
            metrics["loss/state_tokens"] = tokens
        if cfg.motion_weight:
            motion, motion_metrics = _motion_loss(read, read_preds, target, c)
            loss = loss + cfg.motion_weight * motion
            metrics.update(motion_metrics)
    with torch.no_grad():
        metrics = {
            "loss/total": loss.item(),
            **{k: v.item() for k, v in metrics.items()},
            "emb/std": emb.float().std(dim=(0, 1)).mean().item(),
            "baseline/no_change": F.mse_loss(emb[:, :-1].float(), emb[:, 1:].float()).item(),
        }
    return loss, metrics


def _shown_level(
    model: WorldModel, level: torch.Tensor | None, dropout: float, generator: torch.Generator | None
) -> torch.Tensor | None:
    """The windows' levels (B,) a level-conditioned model trains with: in training mode a `dropout` share of them
    hidden (0, the unknown level)."""
    if level is None or not (model.cfg.level_embedding and model.training and dropout > 0):
        return level
    hide = torch.rand(level.shape, generator=generator, device=level.device) < dropout
    return torch.where(hide, 0, level)


def _reward_loss(
    model: WorldModel, preds: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reward head on the predicted latents against (B, K, 4) progress, score, death, flag."""
    out = model.reward(preds.detach() if cfg.reward_detach else preds, actions).float()  # (B, K, 4) or (B, K, 3)
    progress_loss = F.mse_loss(out[..., 0], rewards[..., 0] / PROGRESS_SCALE)
    score_loss = F.mse_loss(out[..., 1], rewards[..., 1] / SCORE_SCALE)
    death_loss = F.binary_cross_entropy_with_logits(
        out[..., 2], rewards[..., 2], pos_weight=torch.tensor(cfg.death_weight, device=out.device)
    )
    reward_loss = progress_loss + score_loss + death_loss
    metrics = {"loss/progress": progress_loss, "loss/score": score_loss, "loss/death": death_loss}
    if model.cfg.flag_head:
        flag_loss = F.binary_cross_entropy_with_logits(
            out[..., 3], rewards[..., 3], pos_weight=torch.tensor(cfg.flag_weight, device=out.device)
        )
        reward_loss, metrics["loss/flag"] = reward_loss + flag_loss, flag_loss
    return reward_loss, {"loss/reward": reward_loss, **metrics}


def _motion_loss(
    read: torch.Tensor, read_preds: torch.Tensor, target: torch.Tensor, c: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The state head's displacements from what it reads off the last context latent, read[:, c-1], to what it reads
    off the later real latents read[:, c:] and the predicted ones read_preds (B, K+1-c, S), against the real
    displacements in target (B, K+1, S); squared errors divided per state dimension by the real displacements' mean
    square in the batch (a constant), so a head that reads no motion scores about 1 on each."""
    anchor = read[:, c - 1 : c]  # (B, 1, S)
    real = target[:, c:] - target[:, c - 1 : c]  # (B, K+1-c, S)
    scale = real.square().mean(dim=(0, 1)).clamp_min(1e-8)  # (S,)
    seen = ((read[:, c:] - anchor - real).square() / scale).mean()
    predicted = ((read_preds - anchor - real).square() / scale).mean()
    return seen + predicted, {"loss/motion": seen, "loss/motion_predicted": predicted}


def _ensemble_loss(model: WorldModel, emb: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Each ensemble head against the real next latent, from the real (detached) one: emb (B, K+1, D), actions
    (B, K[, A]), prev (B[, A]). Only the heads learn from it."""
    before = torch.cat([prev[:, None], actions[:, :-1]], dim=1)  # (B, K[, A]) the action before each latent
    preds = model.ensemble_predictions(emb[:, :-1], before, actions)  # (E, B, K, D)
    return (preds.float() - emb[None, :, 1:].float()).square().mean()
