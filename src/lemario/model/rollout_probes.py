"""Rollout probes (`lemario probe --horizons`): what the controllers train on is not the encoder's embedding but
the predictor's free-running rollout of it. The linear probes fitted on real embeddings read, k steps after a real
start in the scored episodes, three latents: the real one of frame t+k (the ceiling), the one the predictor rolled
out from the start with the actions really taken (what imagination sees), and the start's own (no change: the floor
a predictor must beat to carry anything). A label whose rollout score falls to the no-change one is lost in
imagination even when the encoder holds it.
"""

from __future__ import annotations

import numpy as np
import torch

from lemario.data.buffer import EpisodeBuffer
from lemario.model.probe_fit import embed_frames, ridge_probe, score


def rollout_start_frames(
    buffer: EpisodeBuffer, episodes: np.ndarray, history: int, horizon: int, n: int, seed: int
) -> np.ndarray:
    """Up to n frames t (sorted) of the episodes (E,) bool with `history` - 1 frames before t and `horizon` after
    it in the same episode: a rollout's start (its context ends at t)."""
    per_episode = [
        np.arange(s + history - 1, s + length - horizon)
        for s, length, use in zip(buffer.starts, buffer.lengths, episodes)
        if use and length > history - 1 + horizon
    ]
    t = np.concatenate(per_episode) if per_episode else np.zeros(0, np.int64)
    if len(t) > n:
        t = np.sort(np.random.default_rng(seed).choice(t, n, replace=False))
    return t


@torch.no_grad()
def rolled_out(
    model, buffer: EpisodeBuffer, t: np.ndarray, horizon: int, idx: np.ndarray, emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """From starts t (B,): the real embeddings of frames t..t+horizon (B, horizon+1, D) and the predictor's
    free-running rollout (B, horizon, D) from the real context ending at t, fed the actions really taken. Frames
    among the already embedded ones (sorted idx (N,), emb (N, D)) are not embedded again."""
    h = model.history
    context = t[:, None] + np.arange(1 - h, 1)  # (B, h) frames of the context, oldest first
    ahead = t[:, None] + np.arange(horizon + 1)  # (B, horizon+1)
    need = np.unique(np.concatenate([context.ravel(), ahead.ravel()]))
    have = np.isin(need, idx)
    z = np.empty((len(need), emb.shape[1]), np.float32)  # (n, D)
    z[have] = emb[np.searchsorted(idx, need[have])]
    if not have.all():
        z[~have] = embed_frames(model, buffer, need[~have])[1]
    actions = buffer.actions[t[:, None] + np.arange(1 - h, horizon)]  # (B, h-1+horizon[, A])
    prev = buffer.prev_actions(t - (h - 1))
    pred = model.rollout(
        torch.from_numpy(z[np.searchsorted(need, context)]), torch.from_numpy(actions), torch.from_numpy(prev)
    )
    return z[np.searchsorted(need, ahead)], pred.float().numpy()


def rollout_scores(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    groups: np.ndarray,
    real: np.ndarray,
    pred: np.ndarray,
    y_ahead: np.ndarray,
    horizons: tuple[int, ...],
    binary: bool,
) -> dict[int, dict]:
    """One linear probe, fitted on real embeddings x_fit (N, D) -> y_fit (N,) (episodes `groups`), scored k steps
    ahead of each start: on the real embedding real[:, k] (B, K+1, D), the rollout's pred[:, k-1] (B, K, D) and the
    start's real[:, 0] (no change), against y_ahead[:, k] (B, K+1). {k: {"real", "rollout", "no_change": score}}."""
    ref_m, ref_s = x_fit.mean(0), x_fit.std(0) + 1e-6
    m, s = (0.0, 1.0) if binary else (y_fit.mean(), y_fit.std() + 1e-9)
    latents = [real[:, 0], *(real[:, k] for k in horizons), *(pred[:, k - 1] for k in horizons)]
    out = ridge_probe(
        (x_fit - ref_m) / ref_s, (y_fit - m) / s, (np.concatenate(latents) - ref_m) / ref_s, binary, groups
    )
    out = out.reshape(len(latents), len(real)) * s + m  # (1 + 2 horizons, B)
    n = len(horizons)
    return {
        k: {
            "real": score(y_ahead[:, k], out[1 + i], binary),
            "rollout": score(y_ahead[:, k], out[1 + n + i], binary),
            "no_change": score(y_ahead[:, k], out[0], binary),
        }
        for i, k in enumerate(horizons)
    }


def run_rollout_probes(
    model,
    buffer: EpisodeBuffer,
    targets: dict,
    idx: np.ndarray,
    emb: np.ndarray,
    fit: np.ndarray,
    groups,
    episodes,
    cfg,
) -> dict:
    """The rollout probes of every target (full (N_corpus,) arrays in `targets`) from starts in `episodes` (E,) bool;
    fitted on the embeddings emb (N, D) of the frames idx (N,) where `fit` (N,) bool (episodes `groups`)."""
    K = max(cfg.horizons)
    t = rollout_start_frames(buffer, episodes, model.history, K, cfg.rollout_starts, cfg.seed)
    if not len(t):
        return {"starts": 0, "horizons": {}}
    real, pred = rolled_out(model, buffer, t, K, idx, emb)
    ahead = t[:, None] + np.arange(K + 1)
    per_target = {
        name: rollout_scores(
            emb[fit],
            y[idx[fit]].astype(np.float64),
            groups,
            real,
            pred,
            y[ahead].astype(np.float64),
            cfg.horizons,
            binary,
        )
        for name, (y, binary) in targets.items()
    }
    return {"starts": int(len(t)), "horizons": {k: {n: r[k] for n, r in per_target.items()} for k in cfg.horizons}}


def format_rollout(r: dict) -> list[str]:
    """The printed table of a report's rollout probes: real / rollout / no change per label and horizon."""
    horizons = list(r["horizons"])
    lines = [
        f"rollout probes (linear, fitted on real embeddings; {r['starts']} starts in the scored episodes): "
        "real / rollout / no change, k steps after the start (R2; balanced accuracy for binary labels)",
        f"{'label':<12}" + "".join(f"{f'k={k}':>22}" for k in horizons),
    ]
    for name in r["horizons"][horizons[0]]:
        cells = []
        for k in horizons:
            s = r["horizons"][k][name]
            vals = [s[w].get("r2", s[w].get("balanced_accuracy")) for w in ("real", "rollout", "no_change")]
            cells.append(" / ".join("n/a" if v is None else f"{v:.2f}" for v in vals))
        lines.append(f"{name:<12}" + "".join(f"{c:>22}" for c in cells))
    return lines
