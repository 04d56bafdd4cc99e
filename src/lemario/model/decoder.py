"""A post-hoc decoder from one frozen embedding back to its frame (LeWorldModel's decoding analysis): what does the
latent keep of the picture?

Diagnostic only. It is trained after the world model on the world model's embeddings, computed once with the
weights frozen (no gradient reaches them), and nothing of it goes back into the world model. The JEPA is never
asked to reconstruct anything; whatever the decoder recovers, the latent kept for prediction's sake.

The network: a linear map to a small feature map (7 x 7 for 84 px, 8 x 8 for 64 px), transposed convolutions
doubling it, a resize to the frame's side and a 3 x 3 convolution to logits added to the mean training frame's
(zero at the start: it begins as the mean-frame baseline and learns what the latent adds). The target is the newest
frame of the stack (Mario's grayscale, the push game's RGB). Held-out episodes score it against two baselines
that need no latent: the mean training frame, and the previous frame of the same episode.

`lemario analyze decoder MODEL --corpus C` trains it and writes RUN/analysis/decoder.safetensors, its sidecar
decoder.json (config and held-out errors) and decoder.png (held-out frames above their decodings).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch import nn

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.plots import figure, save_png
from lemario.core.runconfig import as_json
from lemario.data.buffer import EpisodeBuffer
from lemario.model.probe_fit import embed_frames
from lemario.model.probes import split_frames
from lemario.model.world_model import load_world_model


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, image_size: int, channels: int, width: int = 64):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.start = 7 if image_size % 7 == 0 else 8
        ups = max(0, int(math.log2(image_size / self.start)))
        c = 4 * width
        self.fc = nn.Linear(latent_dim, c * self.start**2)
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(c, max(width // 2, c // 2), 4, 2, 1), nn.GELU()]
            c = max(width // 2, c // 2)
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as the base picture: it only learns what the latent adds
        nn.init.zeros_(self.out.bias)
        self.register_buffer("base", torch.zeros(channels, image_size, image_size))
        """(C, H, W) logits of the mean training frame (`set_base`)."""

    def set_base(self, frames: torch.Tensor) -> None:
        """Start from the mean of (N, C, H, W) frames in [0, 1]."""
        self.base.copy_(frames.mean(0).clamp(1e-3, 1 - 1e-3).logit())

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, C, H, W) in [0, 1]
        x = self.up(self.fc(z).view(len(z), -1, self.start, self.start))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.base + self.out(x))


def frame_targets(buffer: EpisodeBuffer, idx: np.ndarray) -> torch.Tensor:
    """The frames at idx as (N, C, H, W) floats in [0, 1]."""
    frames = torch.from_numpy(buffer.frames[idx]).float() / 255.0
    return frames[:, None] if frames.ndim == 3 else frames.permute(0, 3, 1, 2)


def fit_decoder(
    decoder: Decoder,
    z: torch.Tensor,
    frames: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    minutes: float = 0.0,
) -> tuple[list[float], int]:
    """Train on (N, D) embeddings and their (N, C, H, W) frames; returns the loss every 100 steps and the steps
    done. The cosine learning rate follows whichever ends first, `steps` or a budget of `minutes` (0: none), so a
    slow machine gets a shorter fit that still anneals."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    curve, start, step, progress = [], time.perf_counter(), 0, 0.0
    decoder.train()
    while progress < 1.0:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        i = torch.randint(0, len(z), (batch,), generator=g)
        loss = F.mse_loss(decoder(z[i]), frames[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = (time.perf_counter() - start) / 60
        progress = max(step / steps, elapsed / minutes if minutes > 0 else 0.0)
        if step % 100 == 1 or progress >= 1.0:
            curve.append(loss.item())
    return curve, step


def mse_per_frame(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    return (pred - target).pow(2).flatten(1).mean(1).numpy()


def psnr(mse: float) -> float:
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


@dataclass(frozen=True)
class DecoderConfig:
    model: tyro.conf.Positional[Path]
    """World-model checkpoint (model.safetensors); its weights are read, never changed."""
    corpus: Path
    """Episodes of the model's game: a held-out share scores the decoder."""
    score_fraction: float = 0.3
    """Share of episodes (chosen by file name) the decoder is scored on, never trained on."""
    max_frames: int = 20000
    steps: int = 2000
    minutes: float = 6.0
    """Training budget (0: none, for a fit that repeats exactly): the schedule ends with it when the steps would
    take longer (the report names the steps done), so the whole analysis stays within 10 minutes."""
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 32
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    out: Path | None = None
    """Folder of the decoder and its report (default: the model's run folder /analysis)."""


def train_decoder(cfg: DecoderConfig) -> dict:
    t_start = time.perf_counter()
    model, meta = load_world_model(cfg.model)
    buffer = EpisodeBuffer.load(cfg.corpus, skip_unreadable=True)
    if (buffer.game == "push") != model.cfg.continuous_actions:
        raise LemarioError(f"{cfg.corpus} holds the other game than {cfg.model}: pass a corpus of its game")
    scored, idx, episode = split_frames(buffer, "decoder", cfg.score_fraction, cfg.max_frames, cfg.seed)
    is_score = scored[episode]
    _, emb = embed_frames(model, buffer, idx)
    z, frames = torch.from_numpy(emb), frame_targets(buffer, idx)
    torch.manual_seed(cfg.seed)
    decoder = Decoder(model.cfg.latent_dim, model.cfg.image_size, frames.shape[1], cfg.width)
    t0 = time.perf_counter()
    fit, score = torch.from_numpy(~is_score), torch.from_numpy(is_score)
    decoder.set_base(frames[fit])
    curve, steps = fit_decoder(decoder, z[fit], frames[fit], cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.minutes)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        decoded = decoder.eval()(z[score])
    mean_frame = frames[fit].mean(0, keepdim=True).expand_as(frames[score])
    has_prev = idx[is_score] > buffer.episode_start[idx[is_score]]  # frames with a previous one in their episode
    previous = frame_targets(buffer, idx[is_score][has_prev] - 1)
    errors = {
        "decoder": mse_per_frame(decoded, frames[score]),
        "mean_frame": mse_per_frame(mean_frame, frames[score]),
    }
    result = {
        "model": str(cfg.model),
        "corpus": str(cfg.corpus),
        "step": meta.get("step"),
        "fit_frames": int((~is_score).sum()),
        "score_frames": int(is_score.sum()),
        "train_seconds": round(seconds, 3),
        "steps": steps,
        "loss_curve": curve,
        "mse": {k: float(v.mean()) for k, v in errors.items()},
        "previous_frame_mse": float(mse_per_frame(previous, frames[score][torch.from_numpy(has_prev)]).mean()),
        "decoder_on_those_frames_mse": float(errors["decoder"][has_prev].mean()),
    }
    result["psnr"] = {k: psnr(v) for k, v in result["mse"].items()}
    result["seconds"] = round(time.perf_counter() - t_start, 3)  # the whole analysis: embedding, fit, scoring
    out = cfg.out or Path(cfg.model).parent / "analysis"
    world_model = os.path.relpath(Path(cfg.model).resolve(), out.resolve())  # moves with a run folder
    meta = {"kind": "decoder", "world_model": world_model, "config": as_json(cfg), "result": result}
    checkpoint.save(out / "decoder.safetensors", decoder.state_dict(), meta)  # the report is its sidecar
    shown = np.linspace(0, len(decoded) - 1, min(8, len(decoded))).round().astype(int)  # spread over episodes
    rows = {"real": frames[score][shown], "decoded": decoded[shown]}
    strip(rows, [f"held-out {i}" for i in shown], out / "decoder.png", "held-out frames and their decodings")
    return result


def load_decoder(path: Path):
    """(decoder, its world model): a decoder written by `lemario analyze decoder` and the world model whose
    latents it reads."""
    tensors, meta = checkpoint.load(path, kind="decoder")
    model, _ = load_world_model(Path(path).parent / meta["world_model"])  # relative to the decoder's folder
    channels = tensors["out.weight"].shape[0]
    decoder = Decoder(model.cfg.latent_dim, model.cfg.image_size, channels, meta["config"]["width"])
    checkpoint.load_state(decoder, tensors, Path(path))
    return decoder.eval(), model


def strip(rows: dict[str, torch.Tensor], columns: list[str], path: Path, title: str) -> None:
    """A grid of pictures: one row per name, each (n, C, H, W) in [0, 1], one column per label."""
    plt = figure()
    n = len(columns)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows)), squeeze=False)
    for i, (name, images) in enumerate(rows.items()):
        for j in range(n):
            a = images[j].permute(1, 2, 0).squeeze(-1).numpy()
            axes[i, j].imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(columns[j], fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=8)
    save_png(fig, path)


def decoder_main(cfg: DecoderConfig) -> None:
    with torch_threads(cfg.threads):
        r = train_decoder(cfg)
    m = r["mse"]
    print(
        f"held-out MSE: decoder {m['decoder']:.5f} (PSNR {r['psnr']['decoder']:.1f} dB), mean frame "
        f"{m['mean_frame']:.5f}, previous frame {r['previous_frame_mse']:.5f} (decoder on those frames "
        f"{r['decoder_on_those_frames_mse']:.5f}); {r['score_frames']} frames; {r['steps']} steps in "
        f"{r['train_seconds']:.0f} s, {r['seconds']:.0f} s in all"
    )
