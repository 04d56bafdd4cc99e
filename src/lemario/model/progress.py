"""Where does the world model's progress head err? Predicted against realized x change on every step of a corpus.

Issue 20's plateau: policies trained in imagination stop at the same places (1-1's stair walls at x ≈ 2230 and 2990)
and hold right+B there until the step cap, while the evaluation shows their model promising ~2 px a step the game
does not give. This measures that on stored episodes, for every step f -> f+1 that has a next frame:

- **one step**: the progress the reward head reads off the predicted next latent (the taken action, from the real
  latent of f: what a controller choosing that action is promised) against the step's progress reward;
- **along a rollout**: the mean over the next `horizon` steps of a free-running rollout of the actions actually
  taken against the mean realized over the same steps (what imagination sums; an error that one step hides can grow);
- **blocked steps**: steps that hold right while Mario is alive and his x does not change (a wall, a pipe, a stair
  riser; also the top of a jump into one). A model that reads such a step as progress rewards pushing into walls.

Steps are grouped by Mario's x at f (`bin_px` wide bins) and by blocked / moving right / the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.actions import holds
from lemario.games.mario.ram import LABELS
from lemario.model.death import death_report, format_auc_ci
from lemario.model.taken import TakenRollouts, taken_rollouts, transitions_ahead, x_bins
from lemario.model.world_model import load_world_model

_X_POS, _DYING = LABELS.index("x_pos"), LABELS.index("is_dying")
GROUPS = ("blocked", "moving_right", "other")


def progress_report(buffer: EpisodeBuffer, taken: TakenRollouts, bin_px: int = 256) -> dict:
    """Predicted against realized progress on every step of a Mario corpus that `taken` covers (its frames that have
    a next frame), by group and by x bin (see the module; a corpus of several levels shares the bins)."""
    has_next = taken.valid[:, 0]
    steps, horizon = taken.frames[has_next], taken.horizon  # (n,)
    predicted = np.where(taken.valid[has_next], taken.ahead[has_next, :, 0], np.nan)  # (n, H)
    ahead, valid = transitions_ahead(buffer, steps, horizon)[0], taken.valid[has_next]
    realized = np.where(valid, buffer.rewards[ahead, 0], np.nan)  # (n, H)
    real = buffer.rewards[steps, 0]
    alive = (buffer.labels[steps, _DYING] == 0) & (buffer.labels[steps + 1, _DYING] == 0)
    right = holds(buffer.action_set, "right")[buffer.actions[steps]]
    group = np.where(right & alive & (real == 0), 0, np.where(right & (real > 0), 1, 2))
    x = buffer.labels[steps, _X_POS].astype(np.int64)

    def row(mask: np.ndarray) -> dict:
        if not mask.any():
            return {"steps": 0}
        return {
            "steps": int(mask.sum()),
            "real": float(real[mask].mean()),
            "predicted": float(predicted[mask, 0].mean()),
            "real_rollout": float(np.nanmean(realized[mask])),
            "predicted_rollout": float(np.nanmean(predicted[mask])),
        }

    bins = []
    for lo, inside in x_bins(x, bin_px):
        bins.append({"x": lo, **row(inside), "blocked": row(inside & (group == 0))})
    return {
        "horizon": horizon,
        "bin_px": bin_px,
        "groups": {name: row(group == i) for i, name in enumerate(GROUPS)},
        "bins": bins,
        "correlation": _correlation(predicted[:, 0], real),
    }


def episodes_progress(world_model: Path, corpus: Path, files: list[str], max_steps: int = 0) -> dict | None:
    """The report of a world model on the named episodes of a corpus, on `max_steps` of their steps drawn at random
    (seeded; 0: all), with the death report on the same steps under "death" (`lemario.model.death`: does it see the
    deaths there coming?); None for a model without a reward head."""
    model, _ = load_world_model(world_model)
    if not model.cfg.reward_head:
        return None
    buffer = EpisodeBuffer.load(corpus, files=files)
    taken = taken_rollouts(model, buffer, scored_steps(buffer, max_steps))
    return {**progress_report(buffer, taken), "death": death_report(buffer, taken, model.cfg.flag_head)}


def scored_steps(buffer: EpisodeBuffer, max_steps: int = 0) -> np.ndarray:
    """The frames that have a next frame, or `max_steps` of them drawn at random (seeded), in order."""
    steps = np.flatnonzero(transitions_ahead(buffer, np.arange(len(buffer)), 1)[1][:, 0])
    if 0 < max_steps < len(steps):
        steps = np.sort(np.random.default_rng(0).choice(steps, max_steps, replace=False))
    return steps


def summary_line(report: dict) -> str:
    """The blocked and moving-right groups in a line."""
    b, m = report["groups"]["blocked"], report["groups"]["moving_right"]
    h = report["horizon"]
    blocked = f"blocked steps {b['steps']}"
    if b["steps"]:
        blocked += f": predicted {b['predicted']:.2f} px ({h}-step rollout {b['predicted_rollout']:.2f} vs real "
        blocked += f"{b['real_rollout']:.2f})"
    moving = f"moving right {m['steps']}"
    if m["steps"]:
        moving += f": real {m['real']:.2f}, predicted {m['predicted']:.2f}"
    if (death := report.get("death")) is None:  # reports from before session 35
        return f"{blocked}; {moving}"
    auc = format_auc_ci(death["auc"]["all"], death.get("auc_ci", {}).get("all"))  # the interval since session 72
    return f"{blocked}; {moving}; death within {h} steps AUC {auc} ({death['positives']['all']} frames)"


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; NaN when either side does not vary."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def format_progress(report: dict) -> str:
    h = report["horizon"]

    def cells(r: dict) -> str:
        if not r["steps"]:
            return f"{0:>8}"
        one = f"{r['real']:>7.2f}{r['predicted']:>7.2f}"
        return f"{r['steps']:>8}{one}{r['real_rollout']:>8.2f}{r['predicted_rollout']:>7.2f}"

    lines = [
        f"progress (px per step): one step from the real latent, and the mean over a {h}-step rollout of the actions "
        f"taken; correlation of one-step predicted and real {report['correlation']:.3f}",
        f"{'':<14}{'steps':>8}{'real':>7}{'pred':>7}{'real ' + str(h):>8}{'pred ' + str(h):>7}",
    ]
    lines += [f"{name:<14}{cells(r)}" for name, r in report["groups"].items()]
    lines.append(f"by x ({report['bin_px']} px bins): all steps | blocked steps (right held, alive, x unchanged)")
    for b in report["bins"]:
        lines.append(f"x {b['x']:>5}-{b['x'] + report['bin_px']:<6}{cells(b)} |{cells(b['blocked'])}")
    return "\n".join(lines)
