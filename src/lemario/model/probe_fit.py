"""Fitting and scoring one probe: frames to embeddings, ridge regression with its penalty chosen on held-out
episodes, a one-hidden-layer MLP, and the scores (R^2 and r; accuracy and balanced accuracy)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lemario.data.buffer import EpisodeBuffer


@torch.no_grad()
def embed_frames(model, buffer: EpisodeBuffer, idx: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Trunk features (N, trunk width: `WorldModel.trunk`) and embeddings (N, D) of the frame stacks ending at frames
    idx."""
    trunks, embs = [], []
    for i in range(0, len(idx), batch):
        j = idx[i : i + batch]
        trunk = model.trunk(frame_stacks(buffer, j, model.cfg.frame_stack))  # (n, trunk width)
        trunks.append(trunk.float().numpy())
        embs.append(model.project(trunk, torch.from_numpy(buffer.levels(j))).float().numpy())
    return np.concatenate(trunks), np.concatenate(embs)


@torch.no_grad()
def read_frames(model, buffer: EpisodeBuffer, idx: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N, state_head): the state a push model reads off the frame stacks ending at frames idx (its token reader's
    where it has one: `WorldModel.encode_read`)."""
    reads = [
        model.encode_read(frame_stacks(buffer, idx[i : i + batch], model.cfg.frame_stack))[1].float().numpy()
        for i in range(0, len(idx), batch)
    ]
    return np.concatenate(reads)


def frame_stacks(buffer: EpisodeBuffer, j: np.ndarray, stack: int) -> torch.Tensor:
    """(n, stack, ...) uint8: the stacks of `stack` frames ending at frames j, an episode's first repeated."""
    frame_idx = np.maximum(j[:, None] - np.arange(stack - 1, -1, -1), buffer.episode_start[j][:, None])  # (n, stack)
    return torch.from_numpy(buffer.frames[frame_idx])


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Weights (D+1,) of ridge regression on standardized inputs with a bias column (not penalized)."""
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    reg = lam * np.eye(xb.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def ridge_predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - pred) ** 2).sum() / ss) if ss > 0 else float("nan")


def ridge_probe(x_fit, y_fit, x_score, binary: bool, groups: np.ndarray) -> np.ndarray:
    """Ridge with lambda chosen on held-out episodes of the fitting set (a fifth of its episodes: frames of
    one episode are too alike to validate on each other); returns predictions on x_score."""
    episodes = np.unique(groups)
    held = episodes[-max(1, len(episodes) // 5) :]
    val = np.isin(groups, held)
    tr = ~val
    if not tr.any():
        tr = val
    best = None
    for lam in (1e-3, 1e-2, 1e-1, 1, 10, 100, 1000):
        w = ridge_fit(x_fit[tr], y_fit[tr], lam)
        p = ridge_predict(x_fit[val], w)
        score = ((p > 0.5) == (y_fit[val] > 0.5)).mean() if binary else r2(y_fit[val], p)
        if best is None or score > best[0]:
            best = (score, lam)
    return ridge_predict(x_score, ridge_fit(x_fit, y_fit, best[1]))


def mlp_probe(x_fit, y_fit, x_score, binary: bool, steps: int, seed: int) -> np.ndarray:
    """A one-hidden-layer MLP fitted on (x_fit, y_fit); returns its predictions (probabilities if binary) on x_score."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x_fit.shape[1], 256), nn.ReLU(), nn.Linear(256, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xf, yf = torch.from_numpy(x_fit).float(), torch.from_numpy(y_fit).float()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(xf), (min(512, len(xf)),), generator=g)
        out = net(xf[i])[:, 0]
        loss = (
            nn.functional.binary_cross_entropy_with_logits(out, yf[i]) if binary else nn.functional.mse_loss(out, yf[i])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(torch.from_numpy(x_score).float())[:, 0]
        return (out.sigmoid() if binary else out).numpy()


def score(y: np.ndarray, pred: np.ndarray, binary: bool) -> dict:
    """R^2 and Pearson r for a regression target; accuracy, balanced accuracy and positives for a binary one."""
    if not binary:
        r = float(np.corrcoef(y, pred)[0, 1]) if y.std() > 0 and pred.std() > 0 else float("nan")
        return {"r2": r2(y, pred), "r": r}
    hit = (pred > 0.5) == (y > 0.5)
    pos, neg = y > 0.5, y <= 0.5
    bal = (
        float(0.5 * (hit[pos].mean() + hit[neg].mean())) if pos.any() and neg.any() else None
    )  # undefined without both classes
    return {"accuracy": float(hit.mean()), "balanced_accuracy": bal, "positives": int(pos.sum())}
