"""Frame encoders, each followed by LeWorldModel's BatchNorm projector.

- `CNNEncoder`: convolutions over a stack of frames as channels. `nature` is the DQN network (3 convs down to
  7x7); `drqv2` is DrQ-v2's (stride-2 then three stride-1 3x3 convs, a 35x35x32 map: the seed's encoder).
  Whole-model training throughput on this 2-core CPU (benchmarks/train_wm.py, docs/RESULTS.md): nature + MLP
  predictor 808 frames/s, drqv2 + MLP 166, ViT + MLP 100.
- `ViTEncoder`: a small ViT on plain torch; the frame is its CLS token after the final LayerNorm (`tokens` gives
  the patch tokens too, which `TokenReader` reads positions off).
- `Projector`: Linear -> BatchNorm1d -> GELU -> Linear. SIGReg needs it: the ViT's final LayerNorm pins
  features to a shell that no isotropic Gaussian fits, and BatchNorm gives the embedding free scale.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d_in) -> (N, d_out)
        return self.net(x)


class CNNEncoder(nn.Module):
    def __init__(self, in_channels: int, out_dim: int, kind: str = "nature", size: int = 84):
        super().__init__()
        if kind == "nature":
            convs = [
                nn.Conv2d(in_channels, 32, 8, 4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, 2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, 1),
                nn.ReLU(),
            ]
        elif kind == "drqv2":
            convs = [nn.Conv2d(in_channels, 32, 3, 2), nn.ReLU()]
            for _ in range(3):
                convs += [nn.Conv2d(32, 32, 3, 1), nn.ReLU()]
        else:
            raise ValueError(f"unknown CNN kind {kind!r}: use 'nature' or 'drqv2'")
        self.convs = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, size, size)).shape[1]
        self.trunk = nn.Sequential(nn.Linear(flat, out_dim), nn.LayerNorm(out_dim), nn.GELU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, out_dim)
        return self.trunk(self.convs(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (N, L, dim)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    def __init__(self, in_channels: int, out_dim: int, size: int = 84, patch: int = 12, depth: int = 4, heads: int = 3):
        super().__init__()
        if size % patch:
            raise ValueError(f"frame size {size} is not a multiple of the patch size {patch}")
        self.patchify = nn.Conv2d(in_channels, out_dim, patch, patch)
        n_patches = (size // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, out_dim))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, out_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(out_dim, heads, 4 * out_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim, self.grid = out_dim, size // patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, out_dim)
        return self.tokens(x)[:, 0]  # CLS token

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + grid * grid, out_dim): the CLS token, then the patch tokens row by row, after
        the final LayerNorm."""
        tokens = self.patchify(x).flatten(2).transpose(1, 2)  # (N, P, D)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos  # (N, P+1, D)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


class TokenReader(nn.Module):
    """A state head on a ViT's patch tokens: reads `points` 2-D positions where the objects are in the frame, and
    `extra` more outputs (the push game: the T's angle) from the last point's tokens.

    Per point, each token scores itself and proposes an offset from its patch's centre; the position is the
    softmax-weighted mean of centre + offset over the grid (a soft argmax). A head on the CLS token must keep every
    position in one vector the JEPA objective also shapes (the push model's discs read ~10 units off, a supervised
    CNN on the same frames ~4: docs/RESULTS.md, session 53); here the tokens only need to say "here" and "how far
    off my centre". Positions are in [-1, 1] across the frame, x then y, as the state head's targets are when the
    frame shows the whole board (`lemario.games.push.board.head_targets`)."""

    def __init__(self, dim: int, grid: int, points: int, extra: int, hidden: int):
        super().__init__()
        self.points = points
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 3 * points))
        self.extra = nn.Linear(dim, extra)
        centre = (torch.arange(grid, dtype=torch.float32) + 0.5) * 2 / grid - 1
        y, x = torch.meshgrid(centre, centre, indexing="ij")
        self.register_buffer("centres", torch.stack([x.flatten(), y.flatten()], dim=-1), persistent=False)  # (P, 2)
        self.patch = 2 / grid  # a patch's width in [-1, 1] units: offsets are in patches

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, P, dim) patch tokens -> (N, 2 * points + extra): each point's (x, y), then the extra outputs."""
        out = self.net(tokens).unflatten(-1, (self.points, 3))  # (N, P, points, 3): score, dx, dy
        weight = out[..., 0].softmax(dim=1)  # (N, P, points), over the grid
        where = self.centres[:, None] + out[..., 1:] * self.patch  # (N, P, points, 2)
        xy = (weight[..., None] * where).sum(dim=1)  # (N, points, 2)
        last = (weight[..., -1:] * tokens).sum(dim=1)  # (N, dim): the last point's tokens, pooled
        return torch.cat([xy.flatten(1), self.extra(last)], dim=-1)
