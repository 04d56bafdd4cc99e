"""Collapse diagnostics: does the world model use its inputs, and is its latent space alive?

The seed lost hundreds of hours to a predictor that output a constant while its loss curve looked clean. These
numbers catch that from held-out windows:

- sensitivity to the latent: spread of the predictor's output when its input latent changes (other samples'
  latents, same actions), relative to the spread of the real next latents. ~0 means it ignores the state.
- sensitivity to the action: spread of the output over all actions for a fixed latent, relative to the same.
- prediction loss against two trivial predictors: the mean next latent, and "no change" (z_{t+1} = z_t). The
  predictor reads its whole history of real latents (3 for the push game's transformer, 1 for Mario's MLP), as in
  training: the push model trains from 3 and was never asked to predict from one.
- effective rank (exp of the entropy of the normalized singular values) and per-dimension spread of the
  embeddings; the SIGReg statistic on held-out data.
- the jump latch: one-step prediction error on grounded steps that press A, split by whether A was held on the
  step before (no jump starts) or released (a jump starts). A model that cannot tell the two apart averages them
  and errs on both; one that sees the previous action need not.
- what the model believes each action does (`action_progress`, printed by `lemario diagnose`): per action, the
  progress its reward head predicts over every state of the batch, against the x change of the steps that took
  it. An action the corpus never took still gets a prediction, and a controller may find it flattering (issue 21).
  Then the same by place on every step (`lemario.model.progress`): by x bin, and on blocked steps (right held, x
  unchanged), where policies stall.
- what a push model believes the thrust does (`thrust_response`, printed by `lemario diagnose`): how much of the
  discs' and the T's real motion over a window its free-running rollout explains, given the thrusts played and
  given none, and how much of the T's the state head reads off real frames at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from lemario.core.device import to_torch
from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.actions import action_set, holds
from lemario.games.mario.ram import LABELS
from lemario.games.push.board import MOVED, head_positions
from lemario.model.death import death_report, format_death
from lemario.model.progress import format_progress, progress_report
from lemario.model.sigreg import sigreg
from lemario.model.taken import taken_rollouts
from lemario.model.world_model import WorldModel, decode_reward, load_world_model

# A predictor whose output moves less than this fraction of the targets' spread ignores its input latent.
MIN_SENSITIVITY = 0.05
# A predictor whose output moves over the actions by less than this fraction of a real step's change of the latent
# ignores the action. A step moves little of the whole latent, so the targets' spread is no yardstick for the action
# (the shipped 1-1 model, 80% flags, moves 0.04 of it): measured on this yardstick, trained models move 0.11-0.24
# (1-1 from scratch after 2,500 steps 0.11, the shipped 1-1 model 0.22, the shipped push model 0.24), both presets'
# models at init 0 (a residual predictor starts as "no change", AdaLN-zero conditions on nothing; docs/RESULTS.md,
# session 50).
MIN_ACTION_VS_STEP = 0.05
MIN_LATCH_STEPS = 8  # fewer steps of a latch group in the batch: no error reported for it
_ON_GROUND = LABELS.index("on_ground")
_X_POS = LABELS.index("x_pos")


def holds_a(buffer: EpisodeBuffer) -> torch.Tensor | None:
    """(A,) bool: which actions of a Mario corpus's set hold the jump button; None for another game's corpus."""
    if buffer.game != "mario":
        return None
    return torch.from_numpy(holds(buffer.action_set, "A"))


def latch_errors(
    out: torch.Tensor, target: torch.Tensor, batch: dict[str, torch.Tensor], jump: torch.Tensor, step: int = 0
) -> dict[str, float]:
    """One-step errors (B, D) of grounded A-steps after a held A and after a release, the step predicted being
    each window's `step`; jump (A,) bool."""
    a = batch["actions"][:, step]
    prev = batch["actions"][:, step - 1] if step else batch["prev"]
    jump = jump.to(a.device)
    grounded_a = (batch["labels"][:, step, _ON_GROUND] == 1) & jump[a]
    err = (out - target).square().mean(-1)  # (B,)
    metrics = {}
    for name, mask in (("held", grounded_a & jump[prev]), ("released", grounded_a & ~jump[prev])):
        if mask.sum() >= MIN_LATCH_STEPS:
            metrics[f"diag/latch_{name}_mse"] = err[mask].mean().item()
    if len(metrics) == 2:
        metrics["diag/latch_held_vs_released"] = metrics["diag/latch_held_mse"] / max(
            metrics["diag/latch_released_mse"], 1e-12
        )
    return metrics


@torch.no_grad()
def diagnose(
    model: WorldModel, batch: dict[str, torch.Tensor], jump: torch.Tensor | None = None
) -> tuple[dict[str, float], list[str]]:
    """Metrics and warnings on a held-out batch (obs (B, K+1, S, H, W), actions (B, K), prev (B,), labels
    (B, K+1, L)); with jump (A,) (which actions hold A) also the one-step errors by jump-latch state."""
    was_training = model.training
    model.eval()
    try:
        emb = model.encode(batch["obs"], batch.get("level")).float()  # (B, K+1, D)
        actions, prev = batch["actions"], batch["prev"]
        # one step from the predictor's whole history of real latents (a model trained from c > 1 of them, as the
        # push game's, never learnt to predict from fewer)
        c = min(model.history, actions.shape[1])
        z, a, target = emb[:, :c], actions[:, :c], emb[:, c]  # (B, c, D), (B, c[, A]), (B, D)
        out = model.predict(z, a, prev)[:, -1]  # (B, D)
        target_spread = target.std(dim=0).mean().clamp_min(1e-8)

        other = torch.roll(torch.arange(len(z)), 1)
        shuffled = model.predict(z[other], a, prev[other])[:, -1]  # other states, same actions
        sens_z = (out - shuffled).norm(dim=-1).mean() / (2**0.5 * target_spread * target.shape[-1] ** 0.5)

        if model.cfg.continuous_actions:  # the batch's newest actions, each given to every state
            newest = [torch.roll(a[:, -1], i, dims=0) for i in range(min(16, len(a)))]
        else:
            newest = [torch.full_like(a[:, -1], i) for i in range(model.cfg.n_actions)]
        choices = [torch.cat([a[:, :-1], n[:, None]], dim=1) for n in newest]
        per_action = torch.stack([model.predict(z, ch, prev)[:, -1] for ch in choices], dim=1)  # (B, choices, D)
        action_spread = per_action.std(dim=1).mean()
        step_change = (target - z[:, -1]).abs().mean().clamp_min(1e-8)  # how far one real step moves the latent

        pred_mse = F.mse_loss(out, target).item()
        mean_mse = F.mse_loss(target.mean(0, keepdim=True).expand_as(target), target).item()
        still_mse = F.mse_loss(z[:, -1], target).item()
        flat = emb.reshape(-1, emb.shape[-1])
        s = torch.linalg.svdvals(flat - flat.mean(0))
        p = s / s.sum()
        eff_rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
        dim_std = flat.std(0)
        metrics = {
            "diag/sensitivity_latent": sens_z.item(),
            "diag/sensitivity_action": (action_spread / target_spread).item(),
            "diag/action_vs_step": (action_spread / step_change).item(),
            "diag/pred_mse": pred_mse,
            "diag/mean_baseline_mse": mean_mse,
            "diag/no_change_mse": still_mse,
            "diag/pred_vs_best_baseline": pred_mse / max(min(mean_mse, still_mse), 1e-12),
            "diag/effective_rank": eff_rank,
            "diag/latent_dim": float(flat.shape[-1]),
            "diag/dim_std_min": dim_std.min().item(),
            "diag/dim_std_median": dim_std.median().item(),
            "diag/dim_std_max": dim_std.max().item(),
            "diag/sigreg": sigreg(
                emb.transpose(0, 1), generator=torch.Generator(device=emb.device).manual_seed(0)
            ).item(),
        }
        if jump is not None:
            metrics.update(latch_errors(out, target, batch, jump, c - 1))
    finally:
        model.train(was_training)
    return metrics, warnings_from(metrics)


@torch.no_grad()
def action_progress(model: WorldModel, batch: dict[str, torch.Tensor]) -> list[dict]:
    """Per action of a Mario model with a reward head: the batch's steps that took it, their mean x change (px) and
    the progress predicted for them, and the progress predicted for it from every state of the batch (what a
    controller choosing it anywhere is promised). obs (B, 2+, S, H, W), actions (B, 1+), prev (B,), labels
    (B, 2+, L)."""
    was_training = model.training
    model.eval()
    try:
        z = model.encode(batch["obs"][:, :1], batch.get("level"))  # (B, 1, D)
        taken, prev = batch["actions"][:, 0], batch["prev"]  # (B,), (B,)
        real = (batch["labels"][:, 1, _X_POS] - batch["labels"][:, 0, _X_POS]).float()  # (B,) px
        rows = []
        for i in range(model.cfg.n_actions):
            a = torch.full_like(taken, i)
            nxt = model.predict(z, a[:, None], prev)[:, 0]  # (B, D)
            predicted = decode_reward(model.reward(nxt, a).float())[:, 0]  # (B,) px
            mask = taken == i
            rows.append(
                {
                    "action": i,
                    "steps": int(mask.sum()),
                    "real_dx": real[mask].mean().item() if mask.any() else float("nan"),
                    "predicted_dx": predicted[mask].mean().item() if mask.any() else float("nan"),
                    "predicted_dx_everywhere": predicted.mean().item(),
                }
            )
    finally:
        model.train(was_training)
    return rows


@torch.no_grad()
def thrust_response(model: WorldModel, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """A push model's free-running rollout over each window from its history of real latents, once with the
    thrusts played and once with every thrust after the last real latent zeroed: R² of both discs' displacement
    (last real latent to the window's end, as the state head reads them) against the real displacement, and the
    same for the T's centre (`thrust/t_*`: what a push moves, and what the planner's cost reads most). A model
    that ignores its thrusts scores the same twice. Beside them, the T's displacement the state head reads off the
    window's last real frame (`seen`: what the encoder sees of the T's motion, an upper bound for the rollout through
    this head), and all three T lines again on the windows where the T moved over `MOVED` units, a pixel of the
    model's frames (`*_moving`; `thrust/t_moving` counts them).
    obs (B, K+1, ...), actions (B, K, 4), state (B, K+1, 8)."""
    was_training = model.training
    model.eval()
    try:
        emb = model.encode(batch["obs"]).float()  # (B, K+1, D)
        actions = batch["actions"]
        c = min(model.history, actions.shape[1])
        bodies = head_positions(batch["state"].float())  # (B, K+1, 3, 2) units: amber, cyan, the T
        real = bodies[:, -1] - bodies[:, c - 1]  # (B, 3, 2)
        start = head_positions(model.decode_state(emb[:, c - 1]).float())
        zeroed = actions.clone()
        zeroed[:, c - 1 :] = 0
        moving = real[:, 2].norm(dim=-1) > MOVED  # (B,)
        metrics = {
            "thrust/real_motion": real[:, :2].norm(dim=-1).mean().item(),
            "thrust/t_real_motion": real[:, 2].norm(dim=-1).mean().item(),
            "thrust/steps": actions.shape[1] - c + 1,
            "thrust/t_moving": int(moving.sum()),
        }
        last = {
            name: model.rollout(emb[:, :c], a, batch["prev"])[:, -1]
            for name, a in (("given", actions), ("zeroed", zeroed))
        }
        last["seen"] = emb[:, -1]
        for name, latent in last.items():  # (B, D) each
            moved = head_positions(model.decode_state(latent).float()) - start  # (B, 3, 2)
            if name != "seen":
                metrics[f"thrust/r2_{name}"] = _r2(moved[:, :2], real[:, :2])
            metrics[f"thrust/t_r2_{name}"] = _r2(moved[:, 2], real[:, 2])
            metrics[f"thrust/t_r2_{name}_moving"] = _r2(moved[moving, 2], real[moving, 2])
    finally:
        model.train(was_training)
    return metrics


def _r2(predicted: torch.Tensor, real: torch.Tensor) -> float:
    """R² of displacements (B, ..., 2) over the batch; NaN when nothing moved (no variance to explain)."""
    spread = (real - real.mean(0)).square().sum()
    if spread == 0:
        return float("nan")
    return (1 - (predicted - real).square().sum() / spread).item()


def format_action_progress(rows: list[dict], action_set_name: str) -> str:
    names = action_set(action_set_name)
    lines = ["action        steps  real dx  predicted dx  predicted everywhere (px per step)"]
    for r in rows:
        name = ("+".join(names[r["action"]]) or "noop") if r["action"] < len(names) else f"#{r['action']}"
        dx = f"{r['real_dx']:>9.2f}{r['predicted_dx']:>14.2f}{r['predicted_dx_everywhere']:>22.2f}"
        lines.append(f"{name:<12}{r['steps']:>7}{dx}" + ("   never taken" if not r["steps"] else ""))
    return "\n".join(lines)


def warnings_from(m: dict[str, float]) -> list[str]:
    """The collapse warnings that the diagnostic metrics call for (empty when the model looks alive)."""
    out = []
    if m["diag/sensitivity_latent"] < MIN_SENSITIVITY:
        out.append(
            f"PREDICTOR IGNORES ITS INPUT LATENT: output moves {m['diag/sensitivity_latent']:.3f} of the targets' "
            "spread "
            f"(< {MIN_SENSITIVITY}): it has collapsed towards a constant"
        )
    if m["diag/action_vs_step"] < MIN_ACTION_VS_STEP:
        out.append(
            f"predictor ignores the action: over the actions its output moves {m['diag/action_vs_step']:.3f} of "
            f"a real step's change of the latent (< {MIN_ACTION_VS_STEP})"
        )
    if m["diag/pred_vs_best_baseline"] >= 1.0:
        out.append(
            "prediction is no better than a trivial predictor (mean or no-change): ratio "
            f"{m['diag/pred_vs_best_baseline']:.2f}"
        )
    if m["diag/effective_rank"] < 0.1 * m["diag/latent_dim"]:
        out.append(
            f"embeddings span few dimensions: effective rank {m['diag/effective_rank']:.1f} of "
            f"{m['diag/latent_dim']:.0f}"
        )
    return out


def format_report(metrics: dict[str, float], warnings: list[str]) -> str:
    lines = [f"{k.removeprefix('diag/'):<24}{v:>12.4f}" for k, v in metrics.items()]
    lines += [f"WARNING: {w}" for w in warnings] or ["no collapse detected"]
    return "\n".join(lines)


@dataclass(frozen=True)
class DiagnoseConfig:
    checkpoint: tyro.conf.Positional[Path]
    """World-model checkpoint (model.safetensors)."""
    corpus: Path = Path("runs/corpus-1-1")
    """Corpus to draw held-out windows from."""
    windows: int = 1024
    k: int = 4
    seed: int = 0
    horizon: int = 8
    """Steps of the free-running rollout of the actions taken from every frame of the corpus (`lemario.model.taken`):
    death and flag foresight within them, and the progress predicted and realized over them."""
    progress_bin: int = 256
    """Width in px of the x bins of the progress report and of the death foresight by place."""


def diagnose_main(cfg: DiagnoseConfig) -> None:
    model, _ = load_world_model(cfg.checkpoint)
    buffer = EpisodeBuffer.load(cfg.corpus, skip_unreadable=True)  # a diagnostic: warn and go on
    batch = to_torch(
        buffer.sample(cfg.windows, cfg.k, model.cfg.frame_stack, np.random.default_rng(cfg.seed)), torch.device("cpu")
    )
    metrics, warnings = diagnose(model, batch, holds_a(buffer))
    print(format_report(metrics, warnings))
    if model.cfg.reward_head:  # Mario's: what each action promises, and death foresight
        print(format_action_progress(action_progress(model, batch), buffer.action_set))
        taken = taken_rollouts(model, buffer, horizon=cfg.horizon)  # one pass for both reports
        print(format_death(death_report(buffer, taken, model.cfg.flag_head, cfg.progress_bin)))
        print(format_progress(progress_report(buffer, taken, cfg.progress_bin)))
    elif model.cfg.continuous_actions and model.cfg.state_head:  # the push game's: what the thrust does
        t = thrust_response(model, batch)
        motion = f"{t['thrust/steps']} free-running steps (mean {t['thrust/real_motion']:.1f} units)"
        print(
            f"thrust: the discs' motion over {motion}, R² {t['thrust/r2_given']:.3f} given the thrusts played, "
            f"{t['thrust/r2_zeroed']:.3f} given none"
        )
        print(
            f"thrust: the T's motion (mean {t['thrust/t_real_motion']:.1f} units), R² {t['thrust/t_r2_given']:.3f} "
            f"given the thrusts played, {t['thrust/t_r2_zeroed']:.3f} given none, {t['thrust/t_r2_seen']:.3f} read "
            "off the last real frame"
        )
        print(
            f"thrust: the T, on the {t['thrust/t_moving']} windows where it moved over {MOVED:.0f} units: R² "
            f"{t['thrust/t_r2_given_moving']:.3f} given the thrusts played, {t['thrust/t_r2_zeroed_moving']:.3f} given "
            f"none, {t['thrust/t_r2_seen_moving']:.3f} read off the last real frame"
        )
