"""`lemario probe CKPT`: does the frozen encoder's embedding hold the game's physics?

Linear (ridge, regularization chosen on a validation fold) and small-MLP probes from embeddings to the game's
labels, fitted on some episodes and scored on others (a split by episode file). Regression targets report R^2
and Pearson r; binary ones accuracy and balanced accuracy (is_dying is rare: accuracy alone would flatter a
constant). Mario: RAM physics, and how far ahead the nearest enemy is (from the stored RAM). The push game: both
discs' and the T's positions and velocities, the T's angle as cosine and sine; and for a model with a state head,
that head's error in board units on the scored episodes.

Two layers are probed: the embedding the predictor, the reward head and the controllers read (after the
BatchNorm projector, `probes`), and the encoder's trunk before it (`trunk_probes`): what the trunk holds and the
projection drops is the projector's loss, what neither holds the encoder never learnt.

Rollout probes (`horizons`): what the controllers train on is not the encoder's embedding but the predictor's
free-running rollout of it. The linear probes fitted on real embeddings read, k steps after a real start in the
scored episodes, three latents: the real one of frame t+k (the ceiling), the one the predictor rolled out from the
start with the actions really taken (what imagination sees), and the start's own (no change: the floor a
predictor must beat to carry anything). A label whose rollout score falls to the no-change one is lost in
imagination even when the encoder holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from torch import nn

from lemario.core.errors import LemarioError
from lemario.core.files import write_json
from lemario.data.buffer import EpisodeBuffer, is_val_episode, stored_ram
from lemario.games.mario.emulator import level_number
from lemario.games.mario.ram import LABELS, enemy_labels
from lemario.games.push.board import STATE_NAMES, T_ANGLE, head_positions
from lemario.model.world_model import load_world_model

REGRESSION = ("x_pos", "y_pos", "x_vel", "y_vel")
BINARY = ("on_ground", "is_dying")


def probe_targets(buffer: EpisodeBuffer, ram: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, bool]]:
    """{name: ((N,) target per frame, binary)} for the buffer's game; with Mario's stored RAM (N, 2048) also where
    the nearest enemy ahead is (`enemy_labels`: the distance, and whether it is near)."""
    if buffer.game == "push":
        out = {n: (buffer.labels[:, i], False) for i, n in enumerate(STATE_NAMES) if i != T_ANGLE}
        angle = buffer.labels[:, T_ANGLE]
        return {**out, "t_cos": (np.cos(angle), False), "t_sin": (np.sin(angle), False)}
    out = {n: (buffer.labels[:, LABELS.index(n)], n in BINARY) for n in REGRESSION + BINARY}
    if ram is not None:
        enemy = enemy_labels(ram)
        out |= {"enemy_dx": (enemy["enemy_dx"], False), "enemy_near": (enemy["enemy_near"], True)}
    return out


@dataclass(frozen=True)
class ProbeConfig:
    checkpoint: tyro.conf.Positional[Path]
    """World-model checkpoint (model.safetensors of a `lemario train` run)."""
    corpus: Path = Path("runs/corpus-1-1")
    """Corpus whose frames are embedded (episodes are split for fitting and scoring)."""
    score_fraction: float = 0.3
    """Share of episodes the probes are scored on (never fitted on)."""
    max_frames: int = 40000
    """Embed at most this many frames (spread over the episodes)."""
    mlp_steps: int = 1500
    seed: int = 0
    held_out_levels: tuple[str, ...] = ()
    """Levels ('W-S') of a multi-level corpus the probes never fit on: they fit on the other levels' episodes and
    are also scored on each of these, with the share of the in-distribution R^2 they keep (issue 21)."""
    horizons: tuple[int, ...] = (1, 4, 15)
    """Rollout probes k steps into the predictor's free-running rollout (15: the imagination policies' horizon);
    none to skip them."""
    rollout_starts: int = 1000
    """Rollouts (real starts in the scored episodes) the rollout probes read."""
    out: Path | None = None
    """Where to write the JSON table (default: probe.json beside the checkpoint)."""

    def __post_init__(self):
        if any(k < 1 for k in self.horizons) or self.rollout_starts < 1:
            raise LemarioError(
                f"--horizons {' '.join(map(str, self.horizons))} --rollout-starts {self.rollout_starts}: horizons "
                "and starts must be >= 1 (pass --horizons with no value to skip the rollout probes)"
            )


def split_frames(
    buffer: EpisodeBuffer, salt: str, score_fraction: float, max_frames: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes to score on (E,) bool, chosen by a hash of `salt` and the file name (the last third when the hash
    picks none or all), and at most `max_frames` frames spread over the corpus: their indices (N,) and episodes
    (N,)."""
    scored = np.array([is_val_episode(f"{salt}:{f}", score_fraction) for f in buffer.files])
    if scored.all() or not scored.any():
        if len(buffer.files) < 2:
            raise LemarioError(f"{salt} needs at least 2 episodes (fit on some, score on others): collect more")
        scored[:] = False
        scored[-max(1, len(scored) // 3) :] = True
    idx = np.arange(len(buffer))
    if len(idx) > max_frames:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_frames, replace=False))
    return scored, idx, np.repeat(np.arange(len(buffer.starts)), buffer.lengths)[idx]


@torch.no_grad()
def embed_frames(model, buffer: EpisodeBuffer, idx: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Trunk features (N, encoder_dim) and embeddings (N, D) of the frame stacks ending at frames idx."""
    stack = model.cfg.frame_stack
    trunks, embs = [], []
    for i in range(0, len(idx), batch):
        j = idx[i : i + batch]
        frame_idx = np.maximum(
            j[:, None] - np.arange(stack - 1, -1, -1), buffer.episode_start[j][:, None]
        )  # (n, stack)
        trunk = model.trunk(torch.from_numpy(buffer.frames[frame_idx]))  # (n, encoder_dim)
        trunks.append(trunk.float().numpy())
        embs.append(model.project(trunk, torch.from_numpy(buffer.levels(j))).float().numpy())
    return np.concatenate(trunks), np.concatenate(embs)


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


def probe_layer(
    x: np.ndarray,
    targets: dict[str, tuple[np.ndarray, bool]],
    fit: np.ndarray,
    groups: np.ndarray,
    cfg,
    scored: dict[str, np.ndarray],
) -> dict[str, dict]:
    """Linear and MLP probes of every target from features x (N, F), fitted where `fit` (episodes `groups`) and
    scored on each boolean mask of `scored`: {set: {name: {"linear": score, "mlp": score}}}. Features are
    standardized over the fitting frames and the first scored set (the frames `lemario probe` always uses)."""
    first = next(iter(scored.values()))
    ref = x[fit | first]
    x = (x - ref.mean(0)) / (ref.std(0) + 1e-6)
    rows = [np.flatnonzero(m) for m in scored.values()]
    bounds = np.cumsum([0, *map(len, rows)])
    every = np.concatenate(rows)
    results: dict[str, dict] = {name: {} for name in scored}
    for name, (y, binary) in targets.items():
        y = y.astype(np.float64)
        yf = y[fit]
        m, s = (0.0, 1.0) if binary else (yf.mean(), yf.std() + 1e-9)  # regression targets standardized
        lin = ridge_probe(x[fit], (yf - m) / s, x[every], binary, groups) * s + m
        mlp = mlp_probe(x[fit], (yf - m) / s, x[every], binary, cfg.mlp_steps, cfg.seed) * s + m
        for i, set_name in enumerate(scored):
            part, ys = slice(bounds[i], bounds[i + 1]), y[rows[i]]
            results[set_name][name] = {"linear": score(ys, lin[part], binary), "mlp": score(ys, mlp[part], binary)}
    return results


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
def rolled_out(model, buffer: EpisodeBuffer, t: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """From starts t (B,): the real embeddings of frames t..t+horizon (B, horizon+1, D) and the predictor's
    free-running rollout (B, horizon, D) from the real context ending at t, fed the actions really taken."""
    h = model.history
    context = t[:, None] + np.arange(1 - h, 1)  # (B, h) frames of the context, oldest first
    ahead = t[:, None] + np.arange(horizon + 1)  # (B, horizon+1)
    need = np.unique(np.concatenate([context.ravel(), ahead.ravel()]))
    _, z = embed_frames(model, buffer, need)  # (n, D)
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
    model, buffer: EpisodeBuffer, targets: dict, emb_fit: np.ndarray, fit_idx: np.ndarray, groups, episodes, cfg
) -> dict:
    """The rollout probes of every target (full (N_corpus,) arrays in `targets`) from starts in `episodes` (E,) bool;
    fitted on the embeddings emb_fit of frames fit_idx (episodes `groups`)."""
    K = max(cfg.horizons)
    t = rollout_start_frames(buffer, episodes, model.history, K, cfg.rollout_starts, cfg.seed)
    if not len(t):
        return {"starts": 0, "horizons": {}}
    real, pred = rolled_out(model, buffer, t, K)
    ahead = t[:, None] + np.arange(K + 1)
    per_target = {
        name: rollout_scores(
            emb_fit,
            y[fit_idx].astype(np.float64),
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


def run_probes(cfg: ProbeConfig) -> dict:
    """Fit and score every probe of a checkpoint on a corpus; writes and returns the JSON report."""
    model, meta = load_world_model(cfg.checkpoint)
    buffer = EpisodeBuffer.load(cfg.corpus, skip_unreadable=True)  # an analysis: warn and go on
    scored_eps, idx, episode = split_frames(buffer, "probe", cfg.score_fraction, cfg.max_frames, cfg.seed)
    trunk, emb = embed_frames(model, buffer, idx)
    held_levels = held_out_masks(buffer.levels(idx), cfg.held_out_levels, cfg.corpus)  # {level: (N,) its frames}
    held = np.logical_or.reduce([np.zeros(len(idx), dtype=bool), *held_levels.values()])
    is_score = scored_eps[episode] & ~held
    fit = ~scored_eps[episode] & ~held
    scored = {"in_distribution": is_score, **held_levels}
    ram = stored_ram(cfg.corpus, buffer.files) if buffer.game == "mario" else None
    every_frame = probe_targets(buffer, ram)
    targets = {name: (y[idx], binary) for name, (y, binary) in every_frame.items()}
    layers = {
        key: probe_layer(x, targets, fit, episode[fit], cfg, scored)
        for key, x in (("probes", emb), ("trunk_probes", trunk))
    }
    report = {
        "checkpoint": str(cfg.checkpoint),
        "corpus": str(cfg.corpus),
        "frames": int(len(idx)),
        "fit_episodes": int(len(np.unique(episode[fit]))),
        "score_episodes": int(len(np.unique(episode[is_score]))),
        "step": meta.get("step"),
        **{key: layer["in_distribution"] for key, layer in layers.items()},
    }
    if cfg.held_out_levels:
        report["held_out_levels"] = {
            name: {
                "frames": int(scored[name].sum()),
                **{key: layer[name] for key, layer in layers.items()},
                "retention": retention(layers["probes"]["in_distribution"], layers["probes"][name]),
            }
            for name in cfg.held_out_levels
        }
    if cfg.horizons:
        held_eps = np.isin(np.arange(len(buffer.starts)), np.unique(episode[held]))
        report["rollout_probes"] = run_rollout_probes(
            model, buffer, every_frame, emb[fit], idx[fit], episode[fit], scored_eps & ~held_eps, cfg
        )
    if model.cfg.state_head:
        report["state_head"] = state_head_error(model, emb[is_score], buffer.labels[idx][is_score])
    out = cfg.out or Path(cfg.checkpoint).with_name("probe.json")
    write_json(out, report)
    return report


def held_out_masks(levels: np.ndarray, names: tuple[str, ...], corpus: Path) -> dict[str, np.ndarray]:
    """{level name: (N,) bool, which frames of level indexes `levels` (N,) are of it}; every named level must be in
    the corpus and some other level too (the probes fit on those)."""
    masks = {name: levels == level_number(name) for name in names}  # a malformed or unknown level: a clear error
    missing = [name for name, m in masks.items() if not m.any()]
    if missing:
        raise LemarioError(
            f"{corpus} holds no frames of held-out level(s) {', '.join(missing)}: collect them (`lemario collect "
            "--levels ...`) or drop them from --held-out-levels"
        )
    if masks and np.logical_or.reduce(list(masks.values())).all():
        raise LemarioError(f"{corpus} holds only the held-out levels: the probes need other levels to fit on")
    return masks


def retention(inside: dict, held: dict) -> dict[str, float]:
    """{regression target: linear R^2 on a held-out level / its in-distribution linear R^2} (the issue's >= 0.9)."""
    out = {}
    for name, r in inside.items():
        if "r2" in r["linear"] and r["linear"]["r2"] > 0:
            out[name] = held[name]["linear"]["r2"] / r["linear"]["r2"]
    return out


@torch.no_grad()
def state_head_error(model, emb: np.ndarray, states: np.ndarray) -> dict:
    """Mean error of what the push state head reads from embeddings (N, D), against the true (N, 14) states:
    positions in board units, the T's angle in degrees."""
    out = model.decode_state(torch.from_numpy(emb)).numpy()  # (N, 8)
    pos = head_positions(out)  # (N, 3, 2)
    true = np.stack([states[:, 0:2], states[:, 4:6], states[:, 8:10]], axis=1)
    errors = np.linalg.norm(pos - true, axis=-1).mean(0)
    angle = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(out[:, 7], out[:, 6]) - states[:, T_ANGLE])))))
    return {
        "amber_error": float(errors[0]),
        "cyan_error": float(errors[1]),
        "t_error": float(errors[2]),
        "t_angle_error_deg": float(angle.mean()),
        "frames": len(emb),
    }


def format_table(report: dict) -> str:
    lines = [
        f"probes on {report['score_episodes']} held-out episodes (fitted on {report['fit_episodes']}), "
        f"{report['frames']} frames"
    ]
    for key, title in (("probes", "embedding (what the controllers read)"), ("trunk_probes", "encoder trunk")):
        if key in report:
            lines += [f"{title}:", *_rows(report[key])]
    for name, r in report.get("held_out_levels", {}).items():
        kept = ", ".join(f"{k} {v:.2f}" for k, v in r["retention"].items())
        lines += [f"held-out level {name} ({r['frames']} frames), embedding:", *_rows(r["probes"])]
        lines.append(f"  linear R2 kept from in-distribution: {kept}")
    if report.get("rollout_probes", {}).get("horizons"):
        lines += _rollout_rows(report["rollout_probes"])
    if "state_head" in report:
        h = report["state_head"]
        lines.append(
            f"state head on the scored episodes: amber {h['amber_error']:.1f}, cyan {h['cyan_error']:.1f}, T "
            f"{h['t_error']:.1f} units; T angle {h['t_angle_error_deg']:.1f} degrees"
        )
    return "\n".join(lines)


def _rows(probes: dict) -> list[str]:
    lines = [f"{'label':<12}{'linear':>22}{'mlp':>22}"]
    for name, r in probes.items():
        cells = []
        for kind in ("linear", "mlp"):
            s = r[kind]
            if "r2" in s:
                cells.append(f"R2 {s['r2']:.3f}")
            else:
                bal = "n/a" if s["balanced_accuracy"] is None else f"{s['balanced_accuracy']:.3f}"
                cells.append(f"acc {s['accuracy']:.3f} bal {bal}")
        lines.append(f"{name:<12}{cells[0]:>22}{cells[1]:>22}")
    return lines


def _rollout_rows(r: dict) -> list[str]:
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


def probe_main(cfg: ProbeConfig) -> None:
    report = run_probes(cfg)
    print(format_table(report))
    print(f"saved {cfg.out or Path(cfg.checkpoint).with_name('probe.json')}")
