"""The corpus in RAM, and fast sampling of K-step windows for world-model training.

All episodes' frames are concatenated into one (N, H, W[, 3]) uint8 array. A window starting at frame i covers
frames i..i+K of one episode; each of its K+1 observations is the stack of the `stack` frames ending there,
repeating the episode's first frame before its start (exactly what the env showed at reset).

A corpus holds one game. Mario: action indices, the reward channels (relabelled to the current spec), RAM labels.
The push game: thrust vectors (amber x, y, cyan x, y), no rewards, board states as labels and, for the state head,
`targets` (`lemario.games.push.board.head_targets`).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lemario.core.errors import LemarioError
from lemario.data.corpus import read_episode, scan, unreadable_message
from lemario.data.tiers import check_weights, tier_index
from lemario.games.mario.ram import LABELS, label_table, level_index, level_name
from lemario.games.mario.rewards import REWARD_CHANNELS, REWARD_SPEC_VERSION, episode_rewards
from lemario.games.push.board import head_targets

PUSH = "push"


@dataclass
class EpisodeBuffer:
    frames: np.ndarray  # (N, H, W[, 3]) uint8, all episodes back to back
    actions: np.ndarray  # (N,) int64, action taken after frame i (-1 on an episode's last frame)
    rewards: np.ndarray  # (N, 4) float32, reward of that action (0 on an episode's last frame)
    labels: np.ndarray  # (N, L) int32, RAM labels of frame i
    episode_start: np.ndarray  # (N,) int64, index of the first frame of frame i's episode
    starts: np.ndarray  # (E,) first frame of each episode
    lengths: np.ndarray  # (E,) frames per episode (steps + 1)
    files: list[str]
    action_set: str  # the action set every episode's action indices refer to ('push': thrusts)
    targets: np.ndarray | None = None  # (N, S) float32 state-head targets of frame i (the push game), else None
    crop_top: int = 0  # Mario: the screen rows every episode's frames were cut from the top
    pool: bool = True  # Mario: whether every episode's frames are the max of the last two emulator frames
    subpixel: bool = False  # the push game: whether every episode's frames are drawn to a fraction of a pixel

    @property
    def game(self) -> str:
        return "push" if self.action_set == PUSH else "mario"

    @classmethod
    def load(
        cls,
        corpus: Path,
        *,
        max_episodes: int | None = None,
        files: list[str] | None = None,
        relabel: bool = True,
        skip_unreadable: bool = False,
    ) -> EpisodeBuffer:
        """Read a corpus folder, or only the episode `files` named (in the corpus's order).

        An unreadable file among those to read is an error naming it and the fix, or with skip_unreadable a
        warning on stderr and the file left out; a named file the corpus lacks is an error. Episodes labelled
        with another reward-spec version are relabelled from their RAM labels, or refused when relabel=False.
        """
        rows = _select(Path(corpus), files, skip_unreadable)
        rows = rows[:max_episodes] if max_episodes else rows
        if not rows:
            raise LemarioError(
                f"corpus {corpus} has no readable episodes: collect some with `lemario collect --out {corpus}`"
            )
        games = sorted({r.get("game", "mario") for r in rows})
        if len(games) > 1:
            raise LemarioError(f"corpus {corpus} mixes the games {' and '.join(games)}: train on episodes of one")
        if games == [PUSH]:
            return cls._load_push(Path(corpus), rows)
        stale = [r["file"] for r in rows if r["reward_spec_version"] != REWARD_SPEC_VERSION]
        if stale and not relabel:
            raise LemarioError(
                f"{len(stale)} episodes (e.g. {stale[0]}) use another reward spec than v{REWARD_SPEC_VERSION}: "
                "load with relabel=True to relabel them from RAM"
            )
        episodes = [_read_current(Path(corpus) / r["file"]) for r in rows]
        action_set = _one_action_set(Path(corpus), [ep.meta for ep, _, _ in episodes])
        crop_top, pool = _one_preprocessing(Path(corpus), [ep.meta for ep, _, _ in episodes])
        parts = {k: [] for k in ("frames", "actions", "rewards", "labels")}
        for ep, labels, rewards in episodes:
            parts["frames"].append(ep.frames)
            parts["actions"].append(np.append(ep.actions.astype(np.int64), -1))
            parts["rewards"].append(np.concatenate([rewards, np.zeros((1, rewards.shape[1]), np.float32)]))
            parts["labels"].append(labels)
        lengths = np.array([len(f) for f in parts["frames"]], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return cls(
            frames=np.concatenate(parts["frames"]),
            actions=np.concatenate(parts["actions"]),
            rewards=np.concatenate(parts["rewards"]),
            labels=np.concatenate(parts["labels"]),
            episode_start=np.repeat(starts, lengths),
            starts=starts,
            lengths=lengths,
            files=[r["file"] for r in rows],
            action_set=action_set,
            crop_top=crop_top,
            pool=pool,
        )

    @classmethod
    def _load_push(cls, corpus: Path, rows: list[dict]) -> EpisodeBuffer:
        episodes = [read_episode(corpus / r["file"]) for r in rows]
        lengths = np.array([len(ep.frames) for ep in episodes], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        labels = np.concatenate([ep.labels for ep in episodes]).astype(np.float32)
        actions = [np.concatenate([ep.actions, np.zeros((1, ep.actions.shape[1]), np.float32)]) for ep in episodes]
        drawn = {bool(ep.meta.get("subpixel", False)) for ep in episodes}  # episodes from before the option: False
        if len(drawn) > 1:
            raise LemarioError(f"corpus {corpus} mixes frames drawn with and without --subpixel: train on one kind")
        return cls(
            frames=np.concatenate([ep.frames for ep in episodes]),
            actions=np.concatenate(actions),
            rewards=np.zeros((len(labels), 0), np.float32),
            labels=labels,
            episode_start=np.repeat(starts, lengths),
            starts=starts,
            lengths=lengths,
            files=[r["file"] for r in rows],
            action_set=PUSH,
            targets=head_targets(labels),
            subpixel=drawn.pop(),
        )

    def __len__(self) -> int:
        return len(self.frames)

    def window_starts(self, k: int) -> np.ndarray:
        """Every frame from which k more frames of the same episode follow."""
        per_episode = [np.arange(s, s + n - k) for s, n in zip(self.starts, self.lengths) if n > k]
        if not per_episode:
            raise LemarioError(f"no episode is longer than {k} steps: collect longer episodes or use a shorter window")
        return np.concatenate(per_episode)

    def prev_actions(self, frames: np.ndarray) -> np.ndarray:
        """The action taken before each frame, (n[, A]): 0 (Mario's NOOP, no button held at reset; no thrust) at an
        episode's start."""
        before = self.actions[np.maximum(frames - 1, 0)]
        started = (frames > self.episode_start[frames]).reshape(-1, *[1] * (before.ndim - 1))
        return np.where(started, before, 0).astype(before.dtype)

    def levels(self, frames: np.ndarray) -> np.ndarray:
        """The level index (`lemario.games.mario.ram.level_index`) of each frame's episode, (n,) int64: the world and
        stage of its first frame (0 for the push game, which has no levels)."""
        if self.game != "mario":
            return np.zeros(len(frames), np.int64)
        first = self.labels[self.episode_start[frames]]  # (n, L)
        return level_index(first[:, LABELS.index("world")], first[:, LABELS.index("stage")]).astype(np.int64)

    def flagged(self, frames: np.ndarray) -> np.ndarray:
        """(n,) bool: whether each of the frames (n,) belongs to an episode that reached the flag (`flag_get` on in
        any of its labels)."""
        flag = self.labels[:, LABELS.index("flag_get")] > 0  # (N,)
        episode_flag = np.logical_or.reduceat(flag, self.starts)  # (E,)
        return episode_flag[np.searchsorted(self.starts, frames, side="right") - 1]

    def passed(self, frames: np.ndarray, x: float) -> np.ndarray:
        """(n,) bool: whether each of the frames (n,) belongs to an episode that got to x_pos x or reached the flag."""
        furthest = np.maximum.reduceat(self.labels[:, LABELS.index("x_pos")], self.starts)  # (E,)
        return (furthest[np.searchsorted(self.starts, frames, side="right") - 1] >= x) | self.flagged(frames)

    def before_deaths(self, frames: np.ndarray, window: int) -> np.ndarray:
        """(n,) bool: whether each of the frames (n,) lies in the `window` steps before its episode's death becomes
        certain (the first frame the death reward marks doomed, `lemario.games.mario.rewards.doomed`); an episode
        without a death has none."""
        death = self.rewards[:, REWARD_CHANNELS.index("death")] > 0  # (N,) the step into a doomed frame
        doom = np.full(len(self.starts), -1, np.int64)  # (E,) first doomed frame of each episode, -1: none
        for e, (s, n) in enumerate(zip(self.starts, self.lengths)):
            hit = np.flatnonzero(death[s : s + n])
            if len(hit):
                doom[e] = s + hit[0] + 1
        d = doom[np.searchsorted(self.starts, frames, side="right") - 1]  # (n,)
        return (d >= 0) & (frames < d) & (frames >= d - window)

    def sample(
        self,
        batch: int,
        k: int,
        stack: int,
        rng: np.random.Generator,
        valid: np.ndarray | None = None,
        p: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """A batch of K-step windows drawn from the starts `valid` (default: every window), with probabilities p
        (default: uniform):
        obs (B, K+1, stack, H, W[, 3]) uint8, actions (B, K) int64 | (B, K, A) float32, prev (B[, A]) the action
        before the first frame (0, NOOP, at an episode's start), next (B[, A]) the action after the last (-1 on an
        episode's last frame), rewards (B, K, 4) float32 (Mario; (B, K, 0) for push), labels (B, K+1, L), level
        (B,) int64 (`levels`); with targets also state (B, K+1, S) float32.
        """
        valid = self.window_starts(k) if valid is None else valid
        i = rng.choice(valid, size=batch, p=p)  # (B,)
        t = i[:, None] + np.arange(k + 1)  # (B, K+1) frame of each step
        frame_idx = t[:, :, None] - np.arange(stack - 1, -1, -1)  # (B, K+1, stack), oldest first
        frame_idx = np.maximum(frame_idx, self.episode_start[i][:, None, None])
        batch = {
            "obs": self.frames[frame_idx],
            "actions": self.actions[t[:, :-1]],
            "prev": self.prev_actions(i),
            "next": self.actions[t[:, -1]],
            "rewards": self.rewards[t[:, :-1]],
            "labels": self.labels[t],
            "level": self.levels(i),
        }
        if self.targets is not None:
            batch["state"] = self.targets[t]
        return batch


def _select(corpus: Path, files: list[str] | None, skip_unreadable: bool) -> list[dict]:
    """The index rows of the corpus's readable episodes, or of the `files` named; unreadable ones are an error
    naming the fix, or with skip_unreadable a warning; a named file the corpus lacks is an error."""
    index = scan(corpus)
    rows, bad = index.episodes, index.bad
    if files is not None:
        wanted = set(files)
        rows, bad = [r for r in rows if r["file"] in wanted], [b for b in bad if b["file"] in wanted]
        missing = sorted(wanted - {r["file"] for r in rows} - {b["file"] for b in bad})
        if missing:
            raise LemarioError(
                f"{len(missing)} selected episodes (e.g. {missing[0]}) are not in {corpus}: "
                "re-run the selection on the corpus as it is"
            )
    if bad and not skip_unreadable:
        raise LemarioError(f"{unreadable_message(corpus, bad)}; or leave them out with --skip-unreadable")
    if bad:
        print(f"warning: left out {unreadable_message(corpus, bad)}", file=sys.stderr)
    return rows


def _one_action_set(corpus: Path, metas: list[dict]) -> str:
    """The action set all episodes share (indices of two sets mean other buttons: refused); a warning when their
    labels come from RAM of different frames (`lemario.games.mario.env.RAM_FRAME`)."""
    timings = sorted({m.get("ram_frame", "end") for m in metas})
    if len(timings) > 1:
        print(
            f"warning: corpus {corpus} mixes labels of the shown frame and of a frame later (ram_frame "
            f"{' and '.join(timings)}): their labels differ by one emulator frame",
            file=sys.stderr,
        )
    sets = sorted({m["action_set"] for m in metas})
    if len(sets) > 1:
        raise LemarioError(
            f"corpus {corpus} mixes the action sets {' and '.join(sets)}, whose indices mean other buttons: "
            "train on episodes of one set"
        )
    return sets[0]


def _one_preprocessing(corpus: Path, metas: list[dict]) -> tuple[int, bool]:
    """The crop and pooling all episodes' frames share (episodes from before the options: 0 rows, pooled)."""
    kinds = sorted({(int(m.get("crop_top", 0)), bool(m.get("pool", True))) for m in metas})
    if len(kinds) > 1:
        shown = " and ".join(f"crop {c} {'pooled' if p else 'unpooled'}" for c, p in kinds)
        raise LemarioError(f"corpus {corpus} mixes frames of {shown}: train on episodes of one preprocessing")
    return kinds[0]


def _read_current(path: Path):
    """An episode with labels and rewards in the current schema: recomputed from its RAM when they are not."""
    ep = read_episode(path)
    labels = ep.labels
    if ep.meta.get("label_names", list(LABELS)) != list(LABELS):
        labels = label_table(read_episode(path, ram=True).ram)
    rewards = ep.rewards if int(ep.meta["reward_spec_version"]) == REWARD_SPEC_VERSION else episode_rewards(labels)
    return ep, labels, rewards


def stored_ram(corpus: Path, files: list[str]) -> np.ndarray | None:
    """(N, 2048) the stored RAM of the episodes `files` of a Mario corpus, back to back as a buffer of those files
    holds their frames; None when an episode has none."""
    rams = [read_episode(Path(corpus) / f, ram=True).ram for f in files]
    return None if any(r is None for r in rams) else np.concatenate(rams)


def is_val_episode(file: str, fraction: float) -> bool:
    """Whether an episode file is held out: a hash of its name, so the split is stable as the corpus grows."""
    return zlib.crc32(file.encode()) % 10_000 < fraction * 10_000


def split_windows(buffer: EpisodeBuffer, k: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Window starts of training and held-out episodes."""
    val_eps = np.array([is_val_episode(f, fraction) for f in buffer.files])
    if fraction > 0 and not val_eps.any() and len(val_eps) > 1:
        val_eps[-1] = True  # tiny corpora: hold out at least one episode
    starts = buffer.window_starts(k)
    episode_of = np.searchsorted(buffer.starts, starts, side="right") - 1
    train, val = starts[~val_eps[episode_of]], starts[val_eps[episode_of]]
    if len(train) == 0:
        raise LemarioError(f"no training windows of {k} steps: collect more or longer episodes")
    return train, val


def window_probabilities(
    buffer: EpisodeBuffer, starts: np.ndarray, tier_weights: tuple[float, ...] = (), balance_levels: bool = False
) -> np.ndarray | None:
    """Probabilities (n,) of drawing each of the window starts (n,) of a Mario buffer; None: uniform.

    tier_weights: a window of a tier-i episode (`lemario.data.tiers.TIERS`, by the episode's max x_pos and flag)
    weighs tier_weights[i]. balance_levels: each level (the world and stage of an episode's first frame) gets the
    same total probability, shared within it by those weights."""
    check_weights(tier_weights)
    labels, ends = buffer.labels, np.r_[buffer.starts[1:], len(buffer.labels)]
    episode_of = np.searchsorted(buffer.starts, starts, side="right") - 1  # (n,)
    w = np.ones(len(starts))
    if tier_weights and len(set(tier_weights)) > 1:
        x, flag = labels[:, LABELS.index("x_pos")], labels[:, LABELS.index("flag_get")]
        tier = [tier_index(int(x[a:b].max()), int(flag[a:b].max())) for a, b in zip(buffer.starts, ends)]
        w = np.asarray(tier_weights, np.float64)[np.asarray(tier)[episode_of]]
    if w.sum() == 0:
        raise LemarioError(f"--oversample {tier_weights} gives every training window weight 0: weigh a tier it holds")
    if balance_levels:
        level = buffer.levels(starts)  # (n,)
        for lv in np.unique(level):
            mine = level == lv
            if w[mine].sum() == 0:
                raise LemarioError(
                    f"--oversample {tier_weights} gives every window of level {level_name(lv)} weight 0: weigh a "
                    "tier it holds"
                )
            w[mine] /= w[mine].sum()
    if np.allclose(w, w[0]):
        return None
    return w / w.sum()


def with_deaths_share(
    buffer: EpisodeBuffer, frames: np.ndarray, p: np.ndarray | None, share: float, window: int
) -> np.ndarray:
    """Probabilities (n,) of drawing each of the frames (n,): `share` of the mass spread evenly over those in the
    `window` steps before a death (`EpisodeBuffer.before_deaths`), the rest as p says (None: uniform)."""
    near = buffer.before_deaths(frames, window)  # (n,)
    if not near.any():
        raise LemarioError("--death-share: the corpus has no death to start before; use --death-share 0")
    rest = np.full(len(frames), 1 / len(frames)) if p is None else p
    return (1 - share) * rest + share * near / near.sum()
