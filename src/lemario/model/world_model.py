"""The JEPA world model: encoder + BatchNorm projector, action-conditioned predictor + its projector, reward head;
and its loss, a small pure function: next-latent prediction + lambda * SIGReg (+ the reward head's loss).

No EMA, no stop-gradient, no pretrained weights, no reconstruction: the target latents come from the same
encoder the gradient flows through.

With `prev_action` the model's state is (latent, previous action): the predictor, the reward head and everything
that controls through the model (`state`: the policy, the critic, the planner's root) also see the action taken
before each latent, NOOP (index 0) before an episode's first frame. Without it (every checkpoint before the flag
existed) the previous action is accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.model.encoders import CNNEncoder, Projector, ViTEncoder
from lemario.model.predictors import MLPPredictor, TransformerPredictor
from lemario.model.sigreg import sigreg

# The reward head predicts progress / PROGRESS_SCALE, score / SCORE_SCALE and a death logit.
PROGRESS_SCALE, SCORE_SCALE = 8.0, 100.0


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "cnn"
    """'cnn' (over stacked frames) or 'vit' (CLS token of a small ViT)."""
    cnn: str = "nature"
    """CNN kind: 'nature' (DQN, fast on CPU) or 'drqv2' (the seed's 35x35x32 network)."""
    frame_stack: int = 4
    """Frames stacked as encoder channels."""
    image_size: int = 84
    latent_dim: int = 128
    """D, the embedding SIGReg shapes and the predictor predicts."""
    encoder_dim: int = 256
    """CNN trunk width / ViT width."""
    projector_hidden: int = 1024
    vit_patch: int = 12
    vit_depth: int = 4
    vit_heads: int = 4
    predictor: str = "mlp"
    """'mlp' (residual + LayerNorm, one latent) or 'transformer' (causal, AdaLN-zero, `history` latents)."""
    pred_hidden: int = 512
    pred_depth: int = 3
    action_dim: int = 32
    history: int = 3
    pred_heads: int = 4
    pred_dropout: float = 0.1
    n_actions: int = 12
    reward_hidden: int = 256
    prev_action: bool = False
    """The previous action is an input of the predictor and the reward head, and part of the state controllers read
    (SMB's jump latch makes the frames alone non-Markov)."""


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "cnn":
            self.encoder = CNNEncoder(cfg.frame_stack, cfg.encoder_dim, cfg.cnn, cfg.image_size)
        elif cfg.encoder == "vit":
            self.encoder = ViTEncoder(
                cfg.frame_stack, cfg.encoder_dim, cfg.image_size, cfg.vit_patch, cfg.vit_depth, cfg.vit_heads
            )
        else:
            raise ValueError(f"unknown encoder {cfg.encoder!r}: use 'cnn' or 'vit'")
        self.projector = Projector(cfg.encoder_dim, cfg.projector_hidden, cfg.latent_dim)
        D = cfg.latent_dim
        if cfg.predictor == "mlp":
            self.predictor = MLPPredictor(
                D, cfg.n_actions, cfg.pred_hidden, cfg.pred_depth, cfg.action_dim, cfg.prev_action
            )
        elif cfg.predictor == "transformer":
            self.predictor = TransformerPredictor(
                D,
                cfg.n_actions,
                cfg.history,
                cfg.pred_depth,
                cfg.pred_heads,
                cfg.pred_hidden,
                cfg.pred_dropout,
                cfg.prev_action,
            )
        else:
            raise ValueError(f"unknown predictor {cfg.predictor!r}: use 'mlp' or 'transformer'")
        self.pred_proj = Projector(D, cfg.projector_hidden, D)
        self.reward_head = nn.Sequential(
            nn.Linear(self.state_dim, cfg.reward_hidden),
            nn.GELU(),
            nn.Linear(cfg.reward_hidden, cfg.reward_hidden),
            nn.GELU(),
            nn.Linear(cfg.reward_hidden, 3),
        )

    @property
    def history(self) -> int:
        return self.predictor.history

    @property
    def state_dim(self) -> int:
        """Width of `state`: the latent, and the previous action one-hot when the model takes it."""
        return self.cfg.latent_dim + (self.cfg.n_actions if self.cfg.prev_action else 0)

    def state(self, z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """What the reward head and controllers read: (..., D) latents, (...) the action taken before each ->
        (..., state_dim)."""
        if not self.cfg.prev_action:
            return z
        return torch.cat([z, F.one_hot(prev, self.cfg.n_actions).to(z.dtype)], dim=-1)

    def trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, S, H, W) uint8 frame stacks -> (N, encoder_dim): the encoder's features, before the projector."""
        return self.encoder(obs.float() / 255.0)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(..., S, H, W) uint8 frame stacks -> (..., D) embeddings."""
        lead = obs.shape[:-3]
        return self.projector(self.trunk(obs.reshape(-1, *obs.shape[-3:]))).reshape(*lead, -1)

    def predict(self, z: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(B, T, D), (B, T), prev (B,) the action before z[:, 0] -> (B, T, D): output t predicts the latent after
        action t (T <= history, except the MLP, which predicts each position alone)."""
        before = None
        if self.cfg.prev_action:
            before = torch.cat([prev[:, None], actions[:, :-1]], dim=1)  # (B, T) the action before each latent
        out = self.predictor(z, actions, before)
        return self.pred_proj(out.reshape(-1, out.shape[-1])).reshape(out.shape)

    def teacher_forced(self, emb: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Predict each next latent from the real ones: (B, K+1, D), (B, K), prev (B,) -> (B, K, D)."""
        B, K, h = actions.shape[0], actions.shape[1], self.history
        if h == 1:  # the MLP predicts each position on its own
            return self.predict(emb[:, :K], actions, prev)
        first = self.predict(emb[:, : min(h, K)], actions[:, : min(h, K)], prev)  # windows starting at frame 0
        if K <= h:
            return first
        # windows of h latents ending at t = h .. K-1, batched; window s starts after action s-1
        z_win = emb[:, :K].unfold(1, h, 1)[:, 1:].permute(0, 1, 3, 2)  # (B, K-h, h, D)
        a_win = actions.unfold(1, h, 1)[:, 1:]  # (B, K-h, h)
        before = actions[:, : K - h]  # (B, K-h)
        rest = self.predict(z_win.reshape(-1, h, emb.shape[-1]), a_win.reshape(-1, h), before.reshape(-1))[:, -1]
        return torch.cat([first, rest.reshape(B, K - h, -1)], dim=1)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Free-running: predictions are fed back as inputs.

        context (B, c, D) real latents; actions (B, c-1+n), action j taken after latent j; prev (B,) the action
        before latent 0 -> (B, n, D).
        """
        seq = list(context.unbind(1))
        full = torch.cat([prev[:, None], actions], dim=1)  # (B, c+n): full[:, j] is the action before latent j
        c, preds = len(seq), []
        for t in range(actions.shape[1] - c + 1):
            j = c - 1 + t  # index of the newest latent
            lo = max(0, j - self.history + 1)
            window = torch.stack(seq[lo : j + 1], dim=1)  # (B, <=history, D)
            nxt = self.predict(window, full[:, lo + 1 : j + 2], full[:, lo])[:, -1]  # (B, D)
            seq.append(nxt)
            preds.append(nxt)
        return torch.stack(preds, dim=1)

    def reward(self, z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(..., D) latents, (...) the action that led to each -> (..., 3): progress / PROGRESS_SCALE,
        score / SCORE_SCALE, death logit."""
        return self.reward_head(self.state(z, prev))


def decode_reward(out: torch.Tensor) -> torch.Tensor:
    """Reward-head output -> (progress px, score points, death probability)."""
    return torch.stack([out[..., 0] * PROGRESS_SCALE, out[..., 1] * SCORE_SCALE, out[..., 2].sigmoid()], dim=-1)


@dataclass(frozen=True)
class LossConfig:
    free_running: bool = True
    """Feed the predictor its own outputs over the K steps (the seed's K=4 finding) instead of teacher forcing."""
    sigreg_lambda: float = 0.1
    sigreg_projections: int = 1024
    reward_weight: float = 1.0
    """Weight of the reward head's loss (0 trains the JEPA alone)."""
    death_weight: float = 1.0
    """Weight of the positive (doomed) steps in the death loss: they are a few percent of all steps."""
    reward_detach: bool = False
    """Train the reward head on detached predicted latents: its loss then shapes the head alone, not the encoder
    and predictor."""


def world_model_loss(
    model: WorldModel, batch: dict[str, torch.Tensor], cfg: LossConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """batch: obs (B, K+1, S, H, W) uint8, actions (B, K) int64, prev (B,) int64 (the action before the first
    frame), rewards (B, K, 3) float32."""
    obs, actions, prev, rewards = batch["obs"], batch["actions"], batch["prev"], batch["rewards"]
    emb = model.encode(obs)  # (B, K+1, D)
    if cfg.free_running:
        preds = model.rollout(emb[:, :1], actions, prev)  # (B, K, D), from the first real latent
    else:
        preds = model.teacher_forced(emb, actions, prev)  # (B, K, D)
    pred_loss = F.mse_loss(preds.float(), emb[:, 1:].float())
    sig = sigreg(emb.transpose(0, 1), num_proj=cfg.sigreg_projections, generator=generator)  # per step, averaged
    out = model.reward(preds.detach() if cfg.reward_detach else preds, actions).float()  # (B, K, 3)
    progress_loss = F.mse_loss(out[..., 0], rewards[..., 0] / PROGRESS_SCALE)
    score_loss = F.mse_loss(out[..., 1], rewards[..., 1] / SCORE_SCALE)
    death_loss = F.binary_cross_entropy_with_logits(
        out[..., 2], rewards[..., 2], pos_weight=torch.tensor(cfg.death_weight, device=out.device)
    )
    reward_loss = progress_loss + score_loss + death_loss
    loss = pred_loss + cfg.sigreg_lambda * sig + cfg.reward_weight * reward_loss
    with torch.no_grad():
        metrics = {
            "loss/total": loss.item(),
            "loss/pred": pred_loss.item(),
            "loss/sigreg": sig.item(),
            "loss/reward": reward_loss.item(),
            "loss/progress": progress_loss.item(),
            "loss/score": score_loss.item(),
            "loss/death": death_loss.item(),
            "emb/std": emb.float().std(dim=(0, 1)).mean().item(),
            "baseline/no_change": F.mse_loss(emb[:, :-1].float(), emb[:, 1:].float()).item(),
        }
    return loss, metrics


def load_world_model(path: Path, device: str | torch.device = "cpu") -> tuple[WorldModel, dict]:
    """A trained world model (eval mode) and its sidecar."""
    tensors, meta = checkpoint.load(path, kind="world_model")
    try:
        cfg = ModelConfig(**meta["config"])
    except TypeError as e:
        raise LemarioError(
            f"{path} has a model config this lemario cannot build ({e}): use a matching lemario version"
        ) from None
    model = WorldModel(cfg)
    checkpoint.load_state(model, tensors, Path(path))
    return model.to(device).eval(), meta
