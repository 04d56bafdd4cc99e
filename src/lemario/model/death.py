"""Does the world model see death coming? The reward head's death channel scored on whole episodes.

Two questions, on every frame f of the episodes given:
- **foresight**: does Mario die within the next `horizon` steps? Scored by the highest P(death) the model predicts
  along a free-running rollout of the actions actually taken next (what a planner sees), as a ROC AUC with a
  bootstrap interval over episodes; separately for pit deaths and the others (enemies, the clock), each against the
  same negatives. A death ends its episode, so a frame k steps before it has only k actions taken to roll out: each
  frame that dies is compared with the others over as many steps as it has (`matched_auc`; a max over fewer steps
  is lower, and before session 72 that bias counted against the frames that die). The frame of the death itself,
  with nothing ahead, is not a question of foresight and is left out, as is every last frame.
- **calibration**: the head's P(death) of the frame's own latent against its label (the reward spec's death
  channel: 1 on doomed frames) as the expected calibration error over equal-width bins, with the bins.
With a flag head, the same foresight for the flag: does Mario touch the flagpole within `horizon` steps, scored by
the highest P(flag) along the same rollout.
"""

from __future__ import annotations

import numpy as np

from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.ram import LABELS
from lemario.games.mario.rewards import death_onset
from lemario.model.taken import TakenRollouts, x_bins

_X_POS, _ON_GROUND = LABELS.index("x_pos"), LABELS.index("on_ground")


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the probability that a random positive outscores a random negative (ties count
    half); None without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, ties sharing their average
    return float((ranks[positive].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def matched_auc(p: np.ndarray, reach: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of the highest P along each frame's rollout, every positive against every negative over the same
    number of steps: `p` (n, H) the P after each step, `reach` (n,) how many of them lie in the frame's episode. A
    positive with k steps is compared with the negatives that have at least k, both scored by their highest P over
    the first k; the pairs of every k pooled (ties count half). With every reach H: `roc_auc` of the max over H.
    None without a pair."""
    best = np.maximum.accumulate(p, axis=1)  # (n, H) the highest P over the first k + 1 steps
    wins, pairs = 0.0, 0
    for k in np.unique(reach[positive & (reach > 0)]):
        neg = np.sort(best[~positive & (reach >= k), k - 1])  # (m,)
        pos = best[positive & (reach == k), k - 1]  # (q,)
        below, upto = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
        wins += float((below + 0.5 * (upto - below)).sum())
        pairs += len(pos) * len(neg)
    return wins / pairs if pairs else None


def by_episode(episode: np.ndarray) -> list[np.ndarray]:
    """Indices of each episode's entries, in their order: `episode` (n,) -> one (m,) index array an episode."""
    order = np.argsort(episode, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(episode[order])) + 1)


def auc_interval(
    p: np.ndarray,
    reach: np.ndarray,
    positive: np.ndarray,
    episode: np.ndarray,
    resamples: int = 1000,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `matched_auc` with whole episodes resampled (`episode` (n,): each frame's
    episode): a death's positives are the last frames of one episode, so frames are not independent draws and a frame
    bootstrap would be far too narrow. Seeded (the same figures on every call); None where no resample has a pair."""
    groups = by_episode(episode)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(resamples):
        idx = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
        if (v := matched_auc(p[idx], reach[idx], positive[idx])) is not None:
            values.append(v)
    if not values:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of probabilities p against 0/1 outcomes y, and per bin (mean p, rate, count)."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"p": float(p[m].mean()), "rate": float(y[m].mean()), "n": int(m.sum())})
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return {"ece": float(ece), "bins": rows}


def death_onsets(buffer: EpisodeBuffer) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the frame index of its episode's onset of dying (-1 when the episode has none), and whether
    that death is a pit (`lemario.games.mario.rewards.death_onset`)."""
    onset = np.full(len(buffer), -1, np.int64)
    pit = np.zeros(len(buffer), bool)
    for s, n in zip(buffer.starts, buffer.lengths):
        first, pit[s : s + n] = death_onset(buffer.labels[s : s + n])
        if first >= 0:
            onset[s : s + n] = s + first
    return onset, pit


def death_report(buffer: EpisodeBuffer, taken: TakenRollouts, flag_head: bool, bin_px: int = 256) -> dict:
    """Foresight AUCs (all deaths, pits, others, each with its interval over episodes, `auc_interval`; and within
    each `bin_px` x bin where deaths come) and calibration of P(death) on the frames of `buffer` that `taken` covers,
    from the reward head along the actions taken from each (`lemario.model.taken`; the flag's foresight with
    `flag_head`)."""
    doomed = np.r_[0.0, buffer.rewards[:-1, 2]]  # the death channel of the step into each frame
    doomed[buffer.starts] = 0.0
    calibrated = calibration(taken.now[:, 2], doomed[taken.frames])  # every frame: its own latent
    reach = taken.valid.sum(1)  # (n,) steps ahead inside the episode (a prefix of the horizon)
    f, p, reach = taken.frames[reach > 0], taken.ahead[reach > 0], reach[reach > 0]  # frames with a step ahead
    onset, pit = death_onsets(buffer)
    onset, pit = onset[f], pit[f]
    soon = (onset > f) & (onset - f <= taken.horizon)  # dies within the next `horizon` steps
    far = ~soon
    episode = np.searchsorted(buffer.starts, f, side="right") - 1  # (n,)
    kept = {"all": np.ones_like(soon), "pit": far | (soon & pit), "other": far | (soon & ~pit)}  # each AUC's frames
    death = p[..., 2]  # (n, H) P(death) after each step
    return {
        "horizon": taken.horizon,
        "frames": len(f),
        "episodes": len(np.unique(episode)),
        "positives": {"all": int(soon.sum()), "pit": int((soon & pit).sum()), "other": int((soon & ~pit).sum())},
        "auc": {k: matched_auc(death[m], reach[m], soon[m]) for k, m in kept.items()},
        "auc_ci": {k: auc_interval(death[m], reach[m], soon[m], episode[m]) for k, m in kept.items()},
        "bin_px": bin_px,
        "by_x": foresight_by_x(buffer.labels[f, _X_POS], death, reach, soon, bin_px),
        "decisions": decisions_by_x(
            buffer.labels[f, _X_POS], episode, death, reach, soon, bin_px, buffer.labels[f, _ON_GROUND] > 0
        ),
        "calibration": calibrated,
        "flag": flag_foresight(buffer, p[..., 3], reach, f, taken.horizon) if flag_head else None,
    }


def foresight_by_x(x: np.ndarray, p: np.ndarray, reach: np.ndarray, soon: np.ndarray, bin_px: int) -> list[dict]:
    """Per `bin_px` x bin holding frames that precede a death: the AUC among that bin's frames (`matched_auc`: does
    the model tell the passes that end in a death from those that do not, at the same place?) and the mean P one
    step ahead of both (every frame here has that step)."""
    rows = []
    for lo, inside in x_bins(x, bin_px):
        if soon[inside].any():
            pos, neg = p[inside & soon, 0], p[inside & ~soon, 0]
            row = {
                "x": lo,
                "frames": int(inside.sum()),
                "positives": len(pos),
                "auc": matched_auc(p[inside], reach[inside], soon[inside]),
            }
            rows.append({**row, "p_positive": float(pos.mean()), "p_negative": float(neg.mean()) if len(neg) else None})
    return rows


def decisions_by_x(
    x: np.ndarray,
    episode: np.ndarray,
    p: np.ndarray,
    reach: np.ndarray,
    soon: np.ndarray,
    line_px: int,
    ground: np.ndarray,
) -> list[dict]:
    """At each line x = k * line_px, one frame per episode that gets there: the first at or past it. Among those, the
    `matched_auc` of the episodes that die within the horizon from there against those that do not: does the
    model, at the same place and moment, tell the approaches that fail from those that pass? (`foresight_by_x` pools
    every frame of a bin, so it also credits knowing that Mario is already falling.) Rows for lines where a death
    comes, each AUC with its bootstrap interval (one frame an episode: `auc_interval` over those frames), and how the
    approaches stand (`ground` (n,): Mario on the ground): how many of the dying and of the passing ones are on the
    ground; and the mean P one step ahead of both, as `foresight_by_x` gives. Frames (n,) of one episode must be in
    time order."""
    firsts: dict[int, list[int]] = {}
    for idx in by_episode(episode):  # (m,) one episode's frames, in order
        furthest = np.maximum.accumulate(x[idx])  # (m,) the furthest x so far
        for line in range(line_px, int(furthest[-1]) + 1, line_px):
            firsts.setdefault(line, []).append(int(idx[np.searchsorted(furthest, line)]))
    rows = []
    for line, at in sorted(firsts.items()):
        at = np.asarray(at)
        if soon[at].any():
            auc = matched_auc(p[at], reach[at], soon[at])
            ci = auc_interval(p[at], reach[at], soon[at], np.arange(len(at)))
            g, dies, now = ground[at], soon[at], p[at, 0]
            rows.append(
                {
                    "x": line,
                    "episodes": len(at),
                    "positives": int(dies.sum()),
                    "auc": auc,
                    "auc_ci": ci,
                    "grounded": {"dying": int((g & dies).sum()), "passing": int((g & ~dies).sum())},
                    "p_positive": float(now[dies].mean()),
                    "p_negative": float(now[~dies].mean()) if (~dies).any() else None,
                }
            )
    return rows


def flag_foresight(buffer: EpisodeBuffer, p: np.ndarray, reach: np.ndarray, frames: np.ndarray, horizon: int) -> dict:
    """`matched_auc` of P(flag) `p` (n, H) along the rollouts of `frames` (n,), `reach` (n,) steps each, for 'touches
    the flagpole within `horizon` steps' (the reward spec's flag channel marks the step that touches it)."""
    touch = np.full(len(buffer), -1, np.int64)  # per frame: the frame its episode touches the flag at, or -1
    for s, n in zip(buffer.starts, buffer.lengths):
        steps = np.flatnonzero(buffer.rewards[s : s + n - 1, 3])
        if len(steps):
            touch[s : s + n] = s + steps[0] + 1
    soon = (touch[frames] > frames) & (touch[frames] - frames <= horizon)
    return {"positives": int(soon.sum()), "auc": matched_auc(p, reach, soon)}


def format_auc(v: float | None) -> str:
    """An AUC (or a mean probability beside one) to three places, "n/a" where there was none (one class only)."""
    return "n/a" if v is None else f"{v:.3f}"


def format_auc_ci(v: float | None, ci: tuple[float, float] | None) -> str:
    """An AUC with its 95% interval over episodes: '0.666 [0.581, 0.742]'."""
    return format_auc(v) if ci is None else f"{format_auc(v)} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_death(report: dict) -> str:
    auc = {k: format_auc_ci(v, report["auc_ci"][k]) for k, v in report["auc"].items()}
    pos, cal = report["positives"], report["calibration"]
    lines = [
        f"death within {report['horizon']} steps, max P(death) along the rollout of the actions taken "
        f"({report['frames']} frames of {report['episodes']} episodes, each frame that dies against the others over "
        "as many steps as it has; AUC [95% interval, episodes resampled]):",
        f"  AUC all {auc['all']} ({pos['all']} frames), pit {auc['pit']} ({pos['pit']}), "
        f"enemy/clock {auc['other']} ({pos['other']})",
        f"P(death) of each frame's latent against its doomed label: ECE {cal['ece']:.4f}",
    ]
    lines += [f"  p {b['p']:.3f}  rate {b['rate']:.3f}  n {b['n']}" for b in cal["bins"]]
    if report.get("by_x"):
        lines.append(
            "where deaths come, by x: frames, those within the horizon of a death, AUC among the bin's frames, "
            "mean P(death) one step ahead of those and of the others"
        )
        for b in report["by_x"]:
            where = f"  x {b['x']:>5}-{b['x'] + report['bin_px']:<6}{b['frames']:>7} {b['positives']:>6}"
            lines.append(
                f"{where}  AUC {format_auc(b['auc'])}  P {b['p_positive']:.3f} vs {format_auc(b['p_negative'])}"
            )
    if report.get("decisions"):
        lines.append(
            "at each line, the first frame of every episode that reaches it: episodes, those dying within the horizon, "
            "AUC (does the model tell them from the others there?), those on the ground among the dying and the "
            "passing, and the mean P(death) one step ahead of the dying and of the passing"
        )
        for d in report["decisions"]:
            g = d["grounded"]
            lines.append(
                f"  x {d['x']:>5}  {d['episodes']:>6} {d['positives']:>6}  AUC {format_auc_ci(d['auc'], d['auc_ci'])}"
                f"  on the ground {g['dying']}/{d['positives']} dying, {g['passing']}/{d['episodes'] - d['positives']}"
                f" passing  P {d['p_positive']:.3f} vs {format_auc(d['p_negative'])}"
            )
    if report.get("flag") is not None:
        f = report["flag"]
        lines.append(
            f"flag within {report['horizon']} steps, max P(flag) along the rollout: AUC {format_auc(f['auc'])} "
            f"({f['positives']} frames)"
        )
    return "\n".join(lines)
