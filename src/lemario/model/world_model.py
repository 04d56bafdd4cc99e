"""The JEPA world model: encoder + BatchNorm projector, action-conditioned predictor + its projector, reward head
(its loss: `lemario.model.loss`).

No EMA, no stop-gradient, no pretrained weights, no reconstruction: the target latents come from the same
encoder the gradient flows through.

Two games share it. Mario: grayscale frame stacks, action indices, the reward head. The push game (`channels` 3,
`continuous_actions`, `state_head`): single RGB frames whose history the transformer predictor reads, thrust
vectors, and a head that reads the board state from each latent, trained jointly (the seed's DexWM-style head;
optionally a reader of the frame's board off the ViT's patch tokens, `state_points`).

With `prev_action` the model's state is (latent, previous action): the predictor, the reward head and everything
that controls through the model (`state`: the policy, the critic, the planner's root) also see the action taken
before each latent, NOOP (index 0) before an episode's first frame. Without it (every checkpoint before the flag
existed) the previous action is accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.ram import N_LEVELS
from lemario.model.encoders import CNNEncoder, Projector, TokenReader, ViTEncoder
from lemario.model.predictors import MLPPredictor, TransformerPredictor

# The reward head predicts progress / PROGRESS_SCALE, score / SCORE_SCALE, a death logit and (reward spec v3) a
# flag logit.
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
    crop_top: int = 0
    """Screen rows its frames were cut from the top (the env's --crop-top): agents refuse an env that differs."""
    pool: bool = True
    """Its frames are the max of the last two emulator frames (the env's --pool)."""
    subpixel: bool = False
    """The push game: its frames draw the discs and the T to a fraction of a pixel (`push data --subpixel`)."""
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
    channels: int = 1
    """Colour channels per frame: 1 (Mario's grayscale) or 3 (RGB, the push game)."""
    continuous_actions: bool = False
    """Actions are vectors of `n_actions` floats (the push game's thrusts) instead of indices below `n_actions`."""
    reward_head: bool = True
    """Mario's reward head (progress, score, death)."""
    flag_head: bool = True
    """The reward head also predicts the flag (reward spec v3). Checkpoints from before it have none: they load
    with False and predict P(flag) = 0."""
    state_head: int = 0
    """Outputs of a head that reads the game state from each latent, trained with it (the push game: 8); 0: none."""
    state_hidden: int = 256
    state_points: int = 0
    """Positions among the state head's outputs (x, y pairs, first) that a `TokenReader` reads off the ViT's patch
    tokens, trained with it, the rest of the outputs from the last point's tokens (the push game: 3, the discs and
    the T, and the T's angle); what the model reads off a frame (`encode_read`). The head on the latent stays: it
    reads predicted latents, whose readings are taken relative to the newest frame's. 0: no token reader."""
    reader_latent: bool = False
    """The latent is projected from the CLS token and the token reader's reading together (needs `state_points`),
    so the positions the reader reads to a few units reach the latent the predictor works in; without it the latent
    holds what the CLS token keeps of them (the push model's CLS head: ~9-11 units off)."""
    level_embedding: bool = False
    """A learned vector per level (world and stage) added to every latent, so the predictor, the reward head and the
    controllers know the level they play (issue 21). A level the model never trained on, or none given, gets the
    'unknown' vector, which training learns on windows whose level it hides (`--loss.level-dropout`)."""
    residual: bool = False
    """The prediction is the newest latent plus the predictor's output, whose last layer starts at zero: the model
    starts as "no change" and learns the change. For a game whose latent moves little per step (the push game),
    where a predictor that must rebuild the latent through its projector did worse than copying it."""
    ensemble: int = 0
    """Heads of a disagreement ensemble (Plan2Explore's): MLPs that each predict the next latent from the detached
    (state, action), trained beside the model without shaping it; the variance between them (`disagreement`)
    scores how new a transition is to the model. 0: none."""

    def frames_env(self, env: EnvConfig | None = None) -> EnvConfig:
        """`env` (default: the default env) giving the frames this model reads: its stack, size, crop and pooling."""
        return replace(
            env or EnvConfig(),
            frame_stack=self.frame_stack,
            resize=self.image_size,
            crop_top=self.crop_top,
            pool=self.pool,
        )


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.continuous_actions and cfg.prev_action:
            raise LemarioError("--model.prev-action takes action indices: it does not combine with continuous actions")
        channels = cfg.frame_stack * cfg.channels
        if cfg.encoder == "cnn":
            self.encoder = CNNEncoder(channels, cfg.encoder_dim, cfg.cnn, cfg.image_size)
        elif cfg.encoder == "vit":
            self.encoder = ViTEncoder(
                channels, cfg.encoder_dim, cfg.image_size, cfg.vit_patch, cfg.vit_depth, cfg.vit_heads
            )
        else:
            raise ValueError(f"unknown encoder {cfg.encoder!r}: use 'cnn' or 'vit'")
        if cfg.reader_latent and not cfg.state_points:
            raise LemarioError("--model.reader-latent projects the token reader's reading: give --model.state-points")
        trunk_dim = cfg.encoder_dim + (cfg.state_head if cfg.reader_latent else 0)
        self.projector = Projector(trunk_dim, cfg.projector_hidden, cfg.latent_dim)
        D = cfg.latent_dim
        if cfg.predictor == "mlp":
            self.predictor = MLPPredictor(
                D, cfg.n_actions, cfg.pred_hidden, cfg.pred_depth, cfg.action_dim, cfg.prev_action,
                cfg.continuous_actions,
            )  # fmt: skip
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
                cfg.continuous_actions,
            )
        else:
            raise ValueError(f"unknown predictor {cfg.predictor!r}: use 'mlp' or 'transformer'")
        self.pred_proj = Projector(D, cfg.projector_hidden, D)
        if cfg.residual:
            nn.init.zeros_(self.pred_proj.net[-1].weight)  # starts as "no change"
            nn.init.zeros_(self.pred_proj.net[-1].bias)
        if cfg.reward_head:
            self.reward_head = _mlp(self.state_dim, cfg.reward_hidden, 4 if cfg.flag_head else 3)
        if cfg.state_head:
            self.state_head = _mlp(D, cfg.state_hidden, cfg.state_head)
        if cfg.state_points:
            self.token_reader = _token_reader(cfg, self.encoder)
        if cfg.level_embedding:
            self.level_embedding = nn.Embedding(N_LEVELS + 1, D)  # row 0: the unknown level
            nn.init.zeros_(self.level_embedding.weight)  # starts as the unconditioned model
            self.register_buffer("levels_seen", torch.zeros(N_LEVELS + 1, dtype=torch.bool))
        if cfg.ensemble:
            self.ensemble_heads = nn.ModuleList(
                _mlp(self.state_dim + cfg.n_actions, cfg.reward_hidden, D) for _ in range(cfg.ensemble)
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

    @property
    def frame_dims(self) -> int:
        """Trailing dimensions of one observation: (S, H, W) grayscale stacks, (S, H, W, C) colour ones."""
        return 3 if self.cfg.channels == 1 else 4

    def pixels(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, S, H, W[, C]) uint8 frame stacks -> (N, S*C, H, W) floats in [0, 1], the encoder's input."""
        if self.cfg.channels > 1:
            obs = obs.permute(0, 1, 4, 2, 3).flatten(1, 2)  # (N, S*C, H, W)
        return obs.float() / 255.0

    def trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, S, H, W[, C]) uint8 frame stacks -> (N, trunk width): the encoder's features, what the projector takes
        (with `reader_latent`, the token reader's reading after them)."""
        return self._features(self.pixels(obs), read=False)[0]

    def _features(self, x: torch.Tensor, read: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, H, W) pixels -> (N, trunk width) the projector's input, and (N, state_head) the token reader's
        reading where it is asked for (`read`) or projected (`reader_latent`), else None."""
        if not (self.cfg.state_points and (read or self.cfg.reader_latent)):
            return self.encoder(x), None
        tokens = self.encoder.tokens(x)  # (N, 1 + P, E)
        reading = self.token_reader(tokens[:, 1:])  # (N, state_head)
        trunk = torch.cat([tokens[:, 0], reading], dim=-1) if self.cfg.reader_latent else tokens[:, 0]
        return trunk, reading

    def encode(self, obs: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        """(..., S, H, W[, C]) uint8 frame stacks -> (..., D) embeddings. level: the level index of each stack
        (`lemario.games.mario.ram.level_index`; the leading dimensions of obs, or the first of them, as a window's
        level), which a level-conditioned model adds as its vector (a level it never trained on, 0 or None: the
        unknown level's) and any other model ignores."""
        return self._encode(obs, level, read=False)[0]

    def encode_read(self, obs: torch.Tensor, level: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., S, H, W[, C]) uint8 frame stacks -> (..., D) embeddings and (..., state_head) the state the model
        reads off the frames: its token reader's, from the same pass of the encoder, or else its state head's on
        the embeddings (`encode`'s level argument)."""
        return self._encode(obs, level, read=True)

    def _encode(
        self, obs: torch.Tensor, level: torch.Tensor | None, read: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.frame_dims
        lead = obs.shape[:-n]
        if level is not None and self.cfg.level_embedding:  # (other models ignore it: no work per step)
            level = level.reshape(*level.shape, *[1] * (len(lead) - level.dim())).expand(lead).reshape(-1)
        trunk, reading = self._features(self.pixels(obs.reshape(-1, *obs.shape[-n:])), read)
        z = self.project(trunk, level).reshape(*lead, -1)
        if not read:
            return z, None
        return z, self.decode_state(z) if reading is None else reading.reshape(*lead, -1)

    def project(self, trunk: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        """(N, trunk width) trunk features, (N,) their level indexes -> (N, D) embeddings (`encode`)."""
        z = self.projector(trunk)
        if not self.cfg.level_embedding:
            return z
        level = torch.zeros(len(z), dtype=torch.int64, device=z.device) if level is None else level
        return z + self.level_embedding(torch.where(self.levels_seen[level], level, 0))

    def see_levels(self, levels) -> None:
        """Mark level indexes as trained on (a level-conditioned model uses their vectors from now on)."""
        if self.cfg.level_embedding:
            self.levels_seen[torch.as_tensor(levels, dtype=torch.int64, device=self.levels_seen.device)] = True

    def predict(self, z: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(B, T, D), (B, T[, A]), prev (B[, A]) the action before z[:, 0] -> (B, T, D): output t predicts the latent
        after action t (T <= history, except the MLP, which predicts each position alone)."""
        before = None
        if self.cfg.prev_action:
            before = torch.cat([prev[:, None], actions[:, :-1]], dim=1)  # (B, T) the action before each latent
        out = self.predictor(z, actions, before)
        out = self.pred_proj(out.reshape(-1, out.shape[-1])).reshape(out.shape)
        return z + out if self.cfg.residual else out

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
        a_win = actions.unfold(1, h, 1)[:, 1:]  # (B, K-h, h) or (B, K-h, A, h)
        if actions.dim() == 3:
            a_win = a_win.transpose(-1, -2)  # (B, K-h, h, A)
        a_win = a_win.reshape(-1, h, *actions.shape[2:])
        before = actions[:, : K - h].reshape(-1, *actions.shape[2:])  # (B*(K-h)[, A])
        rest = self.predict(z_win.reshape(-1, h, emb.shape[-1]), a_win, before)[:, -1]
        return torch.cat([first, rest.reshape(B, K - h, -1)], dim=1)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Free-running: predictions are fed back as inputs.

        context (B, c, D) real latents; actions (B, c-1+n), action j taken after latent j; prev (B,) the action
        before latent 0 -> (B, n, D).
        """
        seq = list(context.unbind(1))
        before = torch.cat([prev[:, None], actions[:, :-1]], dim=1) if self.cfg.prev_action else None
        cond = self.predictor.condition(actions, before)  # (B, c-1+n, ...): once for every window below
        c, preds = len(seq), []
        for t in range(actions.shape[1] - c + 1):
            j = c - 1 + t  # index of the newest latent
            lo = max(0, j - self.history + 1)
            window = torch.stack(seq[lo : j + 1], dim=1)  # (B, <=history, D)
            nxt = self._project_newest(self.predictor.run(window, cond[:, lo : j + 1]), window)  # (B, D)
            seq.append(nxt)
            preds.append(nxt)
        return torch.stack(preds, dim=1)

    def _project_newest(self, out: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """(B, T, D) predictor outputs of a (B, T, D) window of latents -> (B, D) the next latent: the newest output
        through `pred_proj` (plus the newest latent, residual models). Training normalises over all T positions
        (BatchNorm's batch statistics, as these models were trained); eval mode is row-wise, so only the newest row
        is computed."""
        if self.training:
            nxt = self.pred_proj(out.flatten(0, 1)).view(out.shape)[:, -1]
        else:
            nxt = self.pred_proj(out[:, -1])
        return window[:, -1] + nxt if self.cfg.residual else nxt

    def reward(self, z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(..., D) latents, (...) the action that led to each -> (..., 4) (3 without the flag head): progress /
        PROGRESS_SCALE, score / SCORE_SCALE, death logit, flag logit."""
        return self.reward_head(self.state(z, prev))

    def ensemble_predictions(self, z: torch.Tensor, prev: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(..., D) latents, (...[, A]) the action before each and the action taken after it -> (E, ..., D): each
        ensemble head's next latent."""
        a = action if self.cfg.continuous_actions else F.one_hot(action, self.cfg.n_actions)
        x = torch.cat([self.state(z, prev), a.to(z.dtype)], dim=-1)
        return torch.stack([head(x) for head in self.ensemble_heads])

    def disagreement(self, z: torch.Tensor, prev: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(...) the variance between the ensemble's next latents, averaged over the latent's dimensions."""
        return self.ensemble_predictions(z, prev, action).float().var(dim=0).mean(-1)

    def decode_state(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) latents -> (..., state_head): the game state the state head reads (the push game:
        `lemario.games.push.board.head_targets`)."""
        return self.state_head(z)


def _token_reader(cfg: ModelConfig, encoder: nn.Module) -> TokenReader:
    """The `state_points` reader of a ViT model's state (`ModelConfig.state_points`)."""
    if cfg.encoder != "vit" or not 0 < 2 * cfg.state_points <= cfg.state_head:
        raise LemarioError(
            f"--model.state-points {cfg.state_points} reads positions off a ViT's patch tokens into the state head's "
            f"{cfg.state_head} outputs: use --model.encoder vit and at most state_head / 2 points"
        )
    extra = cfg.state_head - 2 * cfg.state_points
    return TokenReader(cfg.encoder_dim, encoder.grid, cfg.state_points, extra, cfg.state_hidden)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d_out)
    )


def decode_reward(out: torch.Tensor) -> torch.Tensor:
    """Reward-head output (..., 3 or 4) -> (..., 4): progress px, score points, death probability, flag probability
    (0 from a head without the flag)."""
    flag = out[..., 3].sigmoid() if out.shape[-1] > 3 else torch.zeros_like(out[..., 0])
    return torch.stack([out[..., 0] * PROGRESS_SCALE, out[..., 1] * SCORE_SCALE, out[..., 2].sigmoid(), flag], dim=-1)


def known_actions(meta: dict, min_share: float) -> torch.Tensor | None:
    """(A,) bool: the actions a controller of this world model may choose, those that took at least `min_share` of
    its training corpus's steps; None (every action) for a model whose sidecar has no counts (trained before they
    were recorded) or for min_share 0.

    A model learns what an action does only from the steps that took it: one it never saw gets whatever its
    embedding's random init predicts, and a controller finds the action whose prediction flatters it (issue 21:
    the biased collector never presses 6 of the 12 complex actions; policies trained through such a model walked
    into 1-1's left wall predicting 8 px of progress a step)."""
    if not 0 <= min_share < 1:
        raise LemarioError(f"minimum action share {min_share} is not in [0, 1): pass e.g. 0.001, or 0 for every action")
    counts = meta.get("action_counts")
    if counts is None or min_share == 0:
        return None
    counts = torch.tensor(counts, dtype=torch.float64)
    allowed = counts / counts.sum().clamp_min(1) >= min_share
    if not allowed.any():
        raise LemarioError(f"no action takes {min_share:.2%} of the world model's corpus: lower the minimum share")
    return allowed


def load_world_model(path: Path, device: str | torch.device = "cpu") -> tuple[WorldModel, dict]:
    """A trained world model (eval mode) and its sidecar."""
    tensors, meta = checkpoint.load(path, kind="world_model")
    try:
        cfg = ModelConfig(**{"flag_head": False, **meta["config"]})  # no key: from before the flag head
    except TypeError as e:
        raise LemarioError(
            f"{path} has a model config this lemario cannot build ({e}): use a matching lemario version"
        ) from None
    model = WorldModel(cfg)
    checkpoint.load_state(model, tensors, Path(path))
    return model.to(device).eval(), meta
