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

Rollout probes (`horizons`, `lemario.model.rollout_probes`): the same linear probes read k steps into the
predictor's free-running rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.core.errors import LemarioError
from lemario.core.files import write_json
from lemario.data.buffer import EpisodeBuffer, is_val_episode, stored_ram
from lemario.games.mario.emulator import level_number
from lemario.games.mario.ram import LABELS, enemy_labels
from lemario.games.push.board import STATE_NAMES, T_ANGLE, head_positions
from lemario.model.probe_fit import embed_frames, mlp_probe, read_frames, ridge_probe, score
from lemario.model.rollout_probes import format_rollout, run_rollout_probes
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
            model, buffer, every_frame, idx, emb, fit, episode[fit], scored_eps & ~held_eps, cfg
        )
    if model.cfg.state_head:
        report["state_head"] = state_head_error(model, emb[is_score], buffer.labels[idx][is_score])
    if model.cfg.state_points:
        report["token_reader"] = reading_error(read_frames(model, buffer, idx[is_score]), buffer.labels[idx][is_score])
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
    return reading_error(model.decode_state(torch.from_numpy(emb)).numpy(), states)


def reading_error(out: np.ndarray, states: np.ndarray) -> dict:
    """Mean error of (N, 8) state-head readings against the true (N, 14) states (`state_head_error`)."""
    pos = head_positions(out)  # (N, 3, 2)
    true = np.stack([states[:, 0:2], states[:, 4:6], states[:, 8:10]], axis=1)
    errors = np.linalg.norm(pos - true, axis=-1).mean(0)
    angle = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(out[:, 7], out[:, 6]) - states[:, T_ANGLE])))))
    return {
        "amber_error": float(errors[0]),
        "cyan_error": float(errors[1]),
        "t_error": float(errors[2]),
        "t_angle_error_deg": float(angle.mean()),
        "frames": len(out),
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
        lines += format_rollout(report["rollout_probes"])
    for key, title in (("state_head", "state head"), ("token_reader", "token reader (what players read)")):
        if key in report:
            h = report[key]
            lines.append(
                f"{title} on the scored episodes: amber {h['amber_error']:.1f}, cyan {h['cyan_error']:.1f}, T "
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


def probe_main(cfg: ProbeConfig) -> None:
    report = run_probes(cfg)
    print(format_table(report))
    print(f"saved {cfg.out or Path(cfg.checkpoint).with_name('probe.json')}")
