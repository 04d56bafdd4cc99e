"""Action-conditioned latent predictors. Both map a history of latents, the actions taken after each and, when
built with `prev_action`, the actions taken before each: (B, T, D), (B, T)[, (B, T)] -> (B, T, D); output t
predicts the latent of frame t+1. Actions are indices (Mario) or, built `continuous`, (B, T, A) float vectors
(the push game's thrusts).

The previous action makes the state Markov in SMB: a jump starts only if A was up on the frame before, which no
stack of frames shows (FACTS.md, the jump latch).

Each splits into `condition` (the actions' part, per position) and `run` (the latents through it), so a rollout
conditions its whole action sequence once and slides windows over the result.

- `MLPPredictor`: the seed's "V2": residual blocks with LayerNorm on [z_t, embed(a_t)] (only z_t is used).
  The residual + LayerNorm design fixed the seed's dying-unit collapse to a constant output.
- `TransformerPredictor`: LeWorldModel's causal transformer over a window of `history` latents, with the action
  injected in every block by AdaLN-zero (modulation initialised to zero: conditioning starts as a no-op).
"""

from __future__ import annotations

import torch
from torch import nn


def action_input(n_actions: int, dim: int, continuous: bool) -> nn.Module:
    """The action's first layer: an embedding of `n_actions` indices, or a linear map of `n_actions`-float vectors."""
    return nn.Linear(n_actions, dim) if continuous else nn.Embedding(n_actions, dim)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MLPPredictor(nn.Module):
    history = 1

    def __init__(
        self,
        dim: int,
        n_actions: int,
        hidden: int = 512,
        depth: int = 3,
        action_dim: int = 32,
        prev_action: bool = False,
        continuous: bool = False,
    ):
        super().__init__()
        self.action = action_input(n_actions, action_dim, continuous)
        self.prev_action = nn.Embedding(n_actions, action_dim) if prev_action else None
        self.inp = nn.Linear(dim + action_dim * (2 if prev_action else 1), hidden)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, 2 * hidden) for _ in range(depth)))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def forward(
        self, z: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, D), (B, T)[, (B, T)] -> (B, T, D)
        return self.run(z, self.condition(actions, prev))

    def condition(self, actions: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L[, A]), (B, L) -> (B, L, action_dim[*2]): the action embeddings."""
        parts = [self.action(actions)] + ([self.prev_action(prev)] if self.prev_action is not None else [])
        return torch.cat(parts, dim=-1)

    def run(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T, C) -> (B, T, D)
        h = self.inp(torch.cat([z, cond], dim=-1))  # (B, T, hidden)
        return self.out(self.blocks(h))


class AdaLNBlock(nn.Module):
    """Transformer block whose LayerNorms are shifted, scaled and gated by the action (AdaLN-zero)."""

    def __init__(self, dim: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mod (B, T, 6D) this block's `modulation` of the condition."""
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # each (B, T, D)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class TransformerPredictor(nn.Module):
    """Takes at most `history` latents (positions 0.. in the window); `world_model` slides the window."""

    def __init__(
        self,
        dim: int,
        n_actions: int,
        history: int = 3,
        depth: int = 6,
        heads: int = 4,
        mlp: int = 1024,
        dropout: float = 0.1,
        prev_action: bool = False,
        continuous: bool = False,
    ):
        super().__init__()
        self.history = history
        self.action = nn.Sequential(
            action_input(n_actions, dim, continuous), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.prev_action = nn.Embedding(n_actions, dim) if prev_action else None  # added to the action's condition
        self.pos = nn.Parameter(torch.randn(1, history, dim) * 0.02)
        self.blocks = nn.ModuleList(AdaLNBlock(dim, heads, mlp, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, z: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, D), (B, T)[, (B, T)] -> (B, T, D)
        return self.run(z, self.condition(actions, prev))

    def condition(self, actions: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L[, A]), (B, L) -> (B, L, depth, 6D): every block's AdaLN modulation of each position's action."""
        cond = self.action(actions)  # (B, L, D)
        if self.prev_action is not None:
            cond = cond + self.prev_action(prev)
        return torch.stack([block.modulation(cond) for block in self.blocks], dim=2)

    def run(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T, depth, 6D) -> (B, T, D)
        T = z.shape[1]
        assert T <= self.history, f"the predictor takes at most {self.history} latents, got {T}"
        mask = torch.ones(T, T, dtype=torch.bool, device=z.device).triu(1)  # (T, T), True = not attended
        x = z + self.pos[:, :T]
        for i, block in enumerate(self.blocks):
            x = block(x, cond[:, :, i], mask)
        return self.norm(x)
