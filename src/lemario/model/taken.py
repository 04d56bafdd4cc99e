"""The reward head along the actions a corpus took, in one batched pass shared by the death and progress reports.

For frames of stored episodes: the decoded head (`decode_reward`: progress px, score points, P(death), P(flag)) on
each frame's own latent, and after each of the next `horizon` transitions of a free-running rollout of the actions
actually taken (what a planner or imagination sees), with which of those transitions lie inside the frame's episode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lemario.data.buffer import EpisodeBuffer
from lemario.model.world_model import WorldModel, decode_reward


@dataclass(frozen=True)
class TakenRollouts:
    frames: np.ndarray
    """(n,) frame indices into the buffer."""
    now: np.ndarray
    """(n, 4) the decoded head on each frame's own latent (with the action that led to it)."""
    ahead: np.ndarray
    """(n, H, 4) the decoded head after each of the next H transitions taken (0 where not `valid`)."""
    valid: np.ndarray
    """(n, H) bool: the transition has a next frame in the frame's episode."""

    @property
    def horizon(self) -> int:
        return self.valid.shape[1]


def x_bins(x: np.ndarray, bin_px: int) -> Iterator[tuple[int, np.ndarray]]:
    """(bin start, (n,) bool mask) for each `bin_px`-wide bin of Mario's x (n,) that holds a frame, from 0 on (a corpus
    of several levels shares the bins)."""
    for lo in range(0, int(x.max()) + 1, bin_px):
        inside = (x >= lo) & (x < lo + bin_px)
        if inside.any():
            yield lo, inside


def transitions_ahead(buffer: EpisodeBuffer, frames: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, horizon) the transitions taken from each of `frames` on (clipped to the buffer), and which of them belong
    to the frame's episode (a transition needs a next frame)."""
    last = np.repeat(buffer.starts + buffer.lengths - 1, buffer.lengths)  # (N,) last frame of each frame's episode
    ahead = frames[:, None] + np.arange(horizon)
    return np.minimum(ahead, len(buffer) - 1), ahead < last[frames][:, None]


@torch.no_grad()
def taken_rollouts(
    model: WorldModel, buffer: EpisodeBuffer, frames: np.ndarray | None = None, horizon: int = 8, batch: int = 512
) -> TakenRollouts:
    """The reward head on `frames` (default: every frame) and along the rollouts of the actions taken from them."""
    model.eval()
    frames = np.arange(len(buffer)) if frames is None else np.asarray(frames, np.int64)
    stack = model.cfg.frame_stack
    now, ahead = np.zeros((len(frames), 4)), np.zeros((len(frames), horizon, 4))
    steps, valid = transitions_ahead(buffer, frames, horizon)  # (n, H)
    for lo in range(0, len(frames), batch):
        f, sl = frames[lo : lo + batch], slice(lo, lo + batch)  # (b,)
        history = np.maximum(f[:, None] - np.arange(stack - 1, -1, -1), buffer.episode_start[f][:, None])
        z = model.encode(torch.from_numpy(buffer.frames[history]), torch.from_numpy(buffer.levels(f)))  # (b, D)
        prev = torch.from_numpy(buffer.prev_actions(f))
        now[sl] = decode_reward(model.reward(z, prev).float()).numpy()
        actions = torch.from_numpy(np.where(valid[sl], buffer.actions[steps[sl]], 0))  # (b, H)
        preds = model.rollout(z[:, None], actions, prev)  # (b, H, D)
        ahead[sl] = np.where(valid[sl, :, None], decode_reward(model.reward(preds, actions).float()).numpy(), 0.0)
    return TakenRollouts(frames, now, ahead, valid)
