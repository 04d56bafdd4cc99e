"""Push-game training data: `lemario push data`, episodes of the seed's regimes in the turn structure of real play.

Episode i is played from seed SeedSequence([seed, i]): a random start, then turns of `steps_per_turn` steps,
amber and cyan alternating, each turn one regime (`lemario.games.push.regimes`) for the acting disc. A disc keeps
its previous turn's regime and target with probability `persist`, as a player goes on with a plan (the regimes'
shares per turn, `shares`, are unchanged): a contact push then reaches the T and moves it over several turns, as in
real play.
Without it (`persist` 0, the corpora before session 27) the T moved more than a pixel (8 units) in 6% of the turns
against 42-49% in matches where a scripted pusher plays, so the world model hardly saw a push move the T
(docs/RESULTS.md, session 27). It is written to the corpus format (`lemario.data.corpus`) as `DIR/push-<i>.h5`: the
frames, both discs' thrusts (the idle one's zero), the board state per frame, and per turn the actor, the regime,
its target and whether it was kept, in the metadata.

A folder holds one generator config (`DIR/config.json`); re-running the command writes exactly the episodes
still missing (after a kill), a larger `--episodes` adds more, and another config is refused. One writer per
folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lemario.core.errors import LemarioError
from lemario.core.executor import run_parallel
from lemario.core.files import check_writable, now_iso, read_json, write_json, writer_lock
from lemario.core.progress import progress_bar
from lemario.core.provenance import provenance
from lemario.core.runconfig import check_same_run, run_key
from lemario.data.corpus import (
    Episode,
    add_to_index,
    episode_files,
    format_summary,
    index_row,
    read_labels,
    read_meta,
    scan,
    write_episode,
)
from lemario.games.push.board import MOVED, PLAYERS, STATE_NAMES, turn_motion
from lemario.games.push.env import PushConfig, PushGame
from lemario.games.push.regimes import NOISE, REGIMES, SHARES, Turn, draw_regime

MANIFEST = "config.json"
BOOKKEEPING = ("out", "episodes", "workers", "progress")


@dataclass(frozen=True)
class PushDataConfig:
    out: Path = Path("runs/push-data")
    """Corpus folder."""
    episodes: int = 2000
    """Episodes the folder should hold (re-running with more adds the rest)."""
    turns: int = 5
    """Turns per player per episode (a match's)."""
    steps_per_turn: int = 5
    obs_size: int = 64
    subpixel: bool = False
    """Frames drawn to a fraction of a pixel (`lemario.games.push.render`; a model trains on them with
    --model.subpixel)."""
    seed: int = 0
    persist: float = 0.75
    """Probability that a disc keeps its previous turn's regime and target (a run lasts 1 / (1 - persist) turns)."""
    shares: tuple[float, ...] = SHARES
    """Share of the turns drawn for each regime, in the order contact_push, approach_no_push, null_thrust, near_t,
    far_from_t, chase_t, adversarial (default: the seed's mix, no scripted pusher's turns)."""
    noise: float = NOISE
    """Standard deviation (per axis, per step) of the Gaussian noise on a moving regime's thrust. The regimes steer
    by the board, so their thrusts follow from the frames a model sees but for this noise; it is all a corpus
    shows of what a thrust does apart from where the disc was heading."""
    workers: int = 2
    """Worker processes."""
    progress: bool = True

    def validate(self) -> None:
        if min(self.episodes, self.workers) < 1:
            raise LemarioError("--episodes and --workers must be at least 1")
        if not 0.0 <= self.noise <= 1.0:
            raise LemarioError(f"--noise {self.noise} is not a thrust's standard deviation in [0, 1]: use e.g. {NOISE}")
        if not 0.0 <= self.persist < 1.0:
            raise LemarioError(f"--persist {self.persist} is not a probability below 1: use e.g. 0.75")
        if len(self.shares) != len(REGIMES) or min(self.shares) < 0 or abs(sum(self.shares) - 1) > 1e-6:
            raise LemarioError(
                f"--shares {' '.join(map(str, self.shares))}: give one share per regime ({', '.join(REGIMES)}), "
                "none negative, summing to 1"
            )
        self.game.validate()

    @property
    def game(self) -> PushConfig:
        return PushConfig(
            turns=self.turns, steps_per_turn=self.steps_per_turn, obs_size=self.obs_size, subpixel=self.subpixel
        )


def generate_episode(
    game: PushConfig,
    seed: int | np.random.SeedSequence,
    persist: float = 0.0,
    shares: tuple[float, ...] = SHARES,
    noise: float = NOISE,
) -> Episode:
    """One episode of regime turns from `seed` (a full match's length, no winner recorded); each disc keeps its
    last turn (regime and target) with probability `persist` (0: every turn drawn afresh, the older corpora), and
    otherwise draws one from `shares`."""
    rng = np.random.default_rng(seed)
    env = PushGame(game)
    obs, info = env.reset(seed=int(rng.integers(2**31)))
    frames, states, actions, turns = [obs], [info["state"]], [], []
    last: list[Turn | None] = [None] * len(PLAYERS)  # each disc's current turn
    for _ in range(game.match_steps):
        me = info["actor"]
        if info["step_in_turn"] == 0:
            kept = persist > 0 and last[me] is not None and rng.uniform() < persist  # no draw at 0: old seeds replay
            turn = last[me] if kept else Turn(draw_regime(rng, shares), info["state"], me, rng, noise)
            last[me] = turn
            target = None if turn.target is None else [round(float(v), 2) for v in turn.target]
            turns.append({"actor": PLAYERS[me], "regime": turn.regime, "target": target, "kept": bool(kept)})
        thrust = turn(info["state"])
        obs, _, _, _, info = env.step(thrust)
        both = np.zeros((len(PLAYERS), 2), np.float32)
        both[me] = thrust
        frames.append(obs)
        states.append(info["state"])
        actions.append(both.reshape(-1))
    meta = {
        "game": "push",
        "policy": "regimes",
        "persist": persist,
        "shares": list(shares),
        "noise": noise,
        "turns": turns,
        "obs_size": game.obs_size,
        "subpixel": game.subpixel,
    }
    return Episode(np.stack(frames), np.stack(actions), None, np.stack(states), None, meta, label_names=STATE_NAMES)


def episode_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, index])


def _write(task: tuple[PushDataConfig, int, dict]) -> dict:
    cfg, index, extra = task
    ep = generate_episode(cfg.game, episode_seed(cfg.seed, index), cfg.persist, cfg.shares, cfg.noise)
    ep.meta.update(seed=cfg.seed, run="push", run_index=index, **extra)
    path = cfg.out / f"push-{index:05d}.h5"
    write_episode(path, ep)
    return index_row(path, ep.meta, ep.n_steps)


def generate(cfg: PushDataConfig) -> None:
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        key, manifest = run_key(cfg, BOOKKEEPING), cfg.out / MANIFEST
        if manifest.exists():
            stored = read_json(manifest)["key"]
            legacy = run_key(PushDataConfig(persist=0.0), BOOKKEEPING)  # a key without `persist` predates it
            check_same_run(stored, key, legacy, cfg.out, "push data")
        else:
            write_json(manifest, {"key": key, "created": now_iso(), **provenance()})
        done = {int(p.stem.split("-")[1]) for p in cfg.out.glob("push-*.h5")}
        todo = [i for i in range(cfg.episodes) if i not in done]
        extra = provenance()
        bar = progress_bar(
            total=cfg.episodes, initial=len(done & set(range(cfg.episodes))), unit="ep", progress=cfg.progress
        )
        try:
            for start in range(0, len(todo), 50):  # chunks: the index is updated as they land
                chunk = todo[start : start + 50]
                tasks = [(cfg, i, extra) for i in chunk]
                add_to_index(cfg.out, run_parallel(_write, tasks, processes=cfg.workers))
                bar.update(len(chunk))
        finally:
            bar.close()


def data_main(cfg: PushDataConfig) -> None:
    t0 = time.perf_counter()
    generate(cfg)
    index = scan(cfg.out)
    print(format_summary(index, title=str(cfg.out)))
    files = episode_files(cfg.out)
    moved = np.concatenate([turn_motion(read_labels(p), cfg.steps_per_turn) for p in files])  # (turns,)
    regime = np.array([turn["regime"] for p in files for turn in read_meta(p)["turns"]])
    by_regime = ", ".join(f"{r} {np.mean(moved[regime == r] > MOVED):.0%}" for r in REGIMES if (regime == r).any())
    print(
        f"the T moved over {MOVED:.0f} units in {np.mean(moved > MOVED):.1%} of turns (mean {moved.mean():.1f} units); "
        f"by regime: {by_regime}; {time.perf_counter() - t0:.0f} s"
    )
