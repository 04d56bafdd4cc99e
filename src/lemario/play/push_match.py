"""Push-game matches: one player against opponents from both sides of the board, and the round-robin table.

A pairing of N matches plays N // 2 starting positions twice, once with each player as amber (who moves first),
so neither side nor the first move favours anyone. Match seeds are `EVAL_SEED_BASE + seed + i`: disjoint from the
data generator's seeds and from the seeds the scripted rules and the planners' costs were tuned on (0-99).

Per match, from the player's side: the outcome (win, loss, draw), the T's distance to each goal at the end, the
progress: how much the distance difference moved in the player's favour over the match, whether the player's disc
touched the T in each of its turns (a push), and how far the T went in its turns and the opponent's (it coasts on
after a push). Per pairing: the win rate with a bootstrap 95% CI (a draw counts as half a win), draws, the mean
progress, the share of the player's turns with a push, and the shares of its and the opponent's turns in which the
T went over one pixel of the model's frames.

`lemario push match --player NAME --opponent A B ...` plays one player (or several seeds of one world model,
each against every opponent, pooled in the summary with each seed's rate beside it); `lemario push table` plays
every player of a list against every other and prints the win-rate matrix.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import (
    MODEL_COSTS,
    LatentPlanner,
    SimulatorPlanner,
    TurnPlanner,
    keep_check,
    warm_rule,
)
from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json
from lemario.games.push.board import MOVED, goal_distances, turn_motion
from lemario.games.push.env import PushConfig, PushGame, Seen
from lemario.games.push.opponents import SCRIPTED, scripted
from lemario.model.world_model import load_world_model
from lemario.play.stats import bootstrap_ci, paired_permutation_p

EVAL_SEED_BASE = 20_000_000
PLAYERS = (*SCRIPTED, "oracle")
MODEL = "model:"

Player = Callable[[Seen], np.ndarray]


@dataclass(frozen=True)
class PlayConfig:
    matches: int = 50
    """Matches per pairing (half from each side)."""
    seed: int = 0
    """Offset of the match seeds (EVAL_SEED_BASE + seed + i)."""
    cost: str = "approach"
    """The planners' turn cost: 'approach', 'seed', or for world models only 'latent' (LeWorldModel's goal-embedding
    cost; `lemario.control.push_players`)."""
    warm: str = ""
    """Start the planners' search from a scripted rule's turn played out in their own model of the game
    ('chase_t' or 'adversarial'; `lemario.control.push_players`); empty: from no thrust."""
    replan: bool = False
    """The planners plan the turn's rest again before each of its steps, from what they see then (receding
    horizon); otherwise each turn's plan is played open-loop."""
    guard: float = 0.0
    """With --warm: keep the rule's turn wherever the search's first candidates leave the T more than this many
    units apart (rms; a turn that moves the T, where a world model ranks the candidates at about chance); 0: off.
    Measured no help (docs/RESULTS.md, session 64)."""
    front: float = 0.0
    """With --warm: search only where the own disc is within this many units of its pushing point behind the T (the
    `approach` cost's distance, around the T, on the board read from the newest frame); farther, play the rule's turn
    unsearched (its approach); 0: search everywhere. At 30, on the tuning seeds, it keeps the rule's play against
    passive and the search's against the pushers (docs/RESULTS.md, session 68)."""
    cem: GaussianCEMConfig = field(default_factory=GaussianCEMConfig)
    game: PushConfig = field(default_factory=PushConfig)
    out: Path | None = None
    """Folder for the JSON of per-match rows and per-pairing summaries; none: print only."""

    def validate(self) -> None:
        if self.matches < 2 or self.matches % 2:
            raise LemarioError(f"--matches must be an even number >= 2 (half from each side), got {self.matches}")
        if self.cost not in MODEL_COSTS:
            raise LemarioError(f"unknown push cost {self.cost!r}: use one of {', '.join(MODEL_COSTS)}")
        warm_rule(self.warm)
        keep_check(self.guard, self.front, self.warm)
        self.cem.validate()
        self.game.validate()
        if self.game.mode != "match":
            raise LemarioError("matches need --game.mode match")


@dataclass(frozen=True)
class MatchConfig(PlayConfig):
    player: tuple[str, ...] = ("oracle",)
    """Who plays: a scripted player, 'oracle' (CEM in the true simulator) or 'model:PATH' (CEM in a world model);
    or several seeds of one (model:A model:B model:C), each meeting every opponent: the summary pools them; or one
    player reading the board as the mean of several models' readings (model:A,B,C: an ensemble of readings)."""
    opponent: tuple[str, ...] = SCRIPTED
    """Opponents, each met `matches` times."""
    paired_with: Path | None = None
    """Another player's matches.json (this command's `--out`) on the same match seeds: per opponent, the win-rate
    difference (this player's minus that one's) over the matches both played, paired on seed and side, with its
    bootstrap 95% CI and a sign-flip p-value."""

    def validate(self) -> None:
        super().validate()
        for name in (*self.player, *self.opponent):
            player_names_check(name)
        latent_cost_check(self.cost, (*self.player, *self.opponent))


@dataclass(frozen=True)
class TableConfig(PlayConfig):
    players: tuple[str, ...] = PLAYERS
    """Everyone in the round robin (each plays each other and itself)."""

    def validate(self) -> None:
        super().validate()
        for name in self.players:
            player_names_check(name)
        latent_cost_check(self.cost, self.players)


def player_names_check(name: str) -> None:
    if name.startswith(MODEL):
        for path in model_paths(name):
            if not path.is_file():
                raise LemarioError(f"no world model at {path}: pass model:PATH to a push model.safetensors")
        return
    if name not in PLAYERS:
        raise LemarioError(f"unknown push player {name!r}: use one of {', '.join(PLAYERS)} or model:PATH")


def latent_cost_check(cost: str, players) -> None:
    if cost == "latent" and "oracle" in players:
        raise LemarioError("the latent cost needs a world model: the oracle plays with --cost approach or seed")
    if cost == "latent" and any(p.startswith(MODEL) and "," in p for p in players):
        raise LemarioError("the latent cost compares one model's latents: an ensemble plays --cost approach or seed")


def model_paths(name: str) -> list[Path]:
    """'model:A' or an ensemble's 'model:A,B,C' -> its world models' paths."""
    return [Path(p) for p in name.removeprefix(MODEL).split(",")]


@functools.cache
def _world_model(path: Path):
    return load_world_model(path)[0]


def make_player(name: str, seed: int, cfg: PlayConfig) -> Player:
    """A fresh player (planners keep a turn's plan; random players their generator)."""
    plans = (cfg.game.steps_per_turn, cfg.cem, cfg.cost, seed, cfg.warm, cfg.replan, cfg.guard, cfg.front)
    if name.startswith(MODEL):
        return LatentPlanner([_world_model(p) for p in model_paths(name)], *plans)
    if name == "oracle":
        return SimulatorPlanner(*plans)
    rule = scripted(name, seed)
    return lambda seen: rule(seen.state, seen.me)


def play_match(amber: Player, cyan: Player, seed: int, game: PushConfig) -> dict:
    """One match from the start of `seed`: the winner (0 amber, 1 cyan, -1 draw), the distances at start and end, and
    per turn (amber's first, alternating) whether the acting disc touched the T and how far the T went."""
    env = PushGame(game)
    _, info = env.reset(seed=seed)
    start, states, touched = info["goal_distances"], [info["state"]], []
    players, done = (amber, cyan), False
    while not done:
        me = info["actor"]
        _, _, done, _, info = env.step(players[me](env.seen()))
        states.append(info["state"])
        touched.append(bool(info["touched"][me]))
    end = goal_distances(info["state"])
    moved = turn_motion(np.stack(states), game.steps_per_turn).tolist()
    pushed = np.array(touched).reshape(-1, game.steps_per_turn).any(1).tolist()
    return {
        "seed": seed,
        "winner": info["winner"],
        "start": start.tolist(),
        "end": end.tolist(),
        "pushed": pushed,
        "t_moved": moved,
    }


def pairing(name: str, opponent: str, cfg: PlayConfig) -> list[dict]:
    """`cfg.matches` matches of `name` against `opponent`, rows from `name`'s side."""
    return [match_row(name, opponent, EVAL_SEED_BASE + cfg.seed + i // 2, i % 2, cfg) for i in range(cfg.matches)]


def match_row(name: str, opponent: str, seed: int, side: int, cfg: PlayConfig) -> dict:
    """One match of `name` (amber when `side` is 0) against `opponent` from the start of `seed`, from `name`'s side."""
    me, them = make_player(name, seed, cfg), make_player(opponent, seed + 1, cfg)
    t0 = time.perf_counter()
    match = play_match(*((me, them) if side == 0 else (them, me)), seed, cfg.game)
    own, other = side, 1 - side
    progress = (match["end"][other] - match["end"][own]) - (match["start"][other] - match["start"][own])
    return {
        "player": name,
        "opponent": opponent,
        "side": ("amber", "cyan")[side],
        "seed": seed,
        "outcome": "draw" if match["winner"] == -1 else ("win" if match["winner"] == side else "loss"),
        "own_distance": match["end"][own],
        "opponent_distance": match["end"][other],
        "progress": progress,
        "pushed_own": match["pushed"][own::2],
        "t_moved_own": match["t_moved"][own::2],
        "t_moved_opponent": match["t_moved"][other::2],
        "seconds": time.perf_counter() - t0,
        **({"guarded": me.guarded} if (cfg.guard or cfg.front) and isinstance(me, TurnPlanner) else {}),
    }


SCORE = {"win": 1.0, "draw": 0.5, "loss": 0.0}


def summarize(rows: list[dict]) -> dict:
    """Win rate (a draw is half a win) with its bootstrap 95% CI, wins / draws / losses, mean progress, and the share
    of the player's and the opponent's turns that moved the T."""
    score = np.array([SCORE[r["outcome"]] for r in rows])
    lo, hi = bootstrap_ci(score)
    outcomes = [r["outcome"] for r in rows]
    return {
        "matches": len(rows),
        "win_rate": float(score.mean()),
        "ci95_low": lo,
        "ci95_high": hi,
        "wins": outcomes.count("win"),
        "draws": outcomes.count("draw"),
        "losses": outcomes.count("loss"),
        "mean_progress": float(np.mean([r["progress"] for r in rows])),
        "pushed_own": float(np.mean([r["pushed_own"] for r in rows])),
        "moved_own": float(np.mean([np.array(r["t_moved_own"]) > MOVED for r in rows])),
        "moved_opponent": float(np.mean([np.array(r["t_moved_opponent"]) > MOVED for r in rows])),
        "seconds_per_match": float(np.mean([r["seconds"] for r in rows])),
        **guarded(rows),
    }


def guarded(rows: list[dict]) -> dict:
    """A guarded planner's rows (`--guard`, `--front`) -> {"guarded": the share of its plans it kept the rule's turn
    in}; others' -> {}."""
    counts = np.array([r["guarded"] for r in rows if "guarded" in r]).reshape(-1, 2)  # (matches, [kept, searched])
    return {"guarded": float(counts[:, 0].sum() / max(counts[:, 1].sum(), 1))} if len(counts) else {}


def paired(rows: list[dict], other: list[dict]) -> dict:
    """Score differences, rows minus other, of the matches both played (one opponent's): paired on (seed, side), the
    k-th row of a key (the k-th seed of a pooled player) with the other's k-th. The mean difference with its
    bootstrap 95% CI, the sign-flip p-value that it is above 0, and how many matches changed."""
    theirs: dict[tuple, list[float]] = {}
    for r in other:
        theirs.setdefault((r["seed"], r["side"]), []).append(SCORE[r["outcome"]])
    seen: dict[tuple, int] = {}
    diffs = []
    for r in rows:
        key = (r["seed"], r["side"])
        k = seen[key] = seen.get(key, -1) + 1
        if k < len(theirs.get(key, ())):
            diffs.append(SCORE[r["outcome"]] - theirs[key][k])
    if not diffs:
        raise LemarioError("--paired-with: the two players share no match (opponent, seed, side): use the same seeds")
    lo, hi = bootstrap_ci(diffs)
    d = np.array(diffs)
    return {
        "matches": len(d),
        "difference": float(d.mean()),
        "ci95_low": lo,
        "ci95_high": hi,
        "p_above_0": paired_permutation_p(d),
        "changed": int((d != 0).sum()),
    }


def recorded_rows(path: Path, option: str) -> list[dict]:
    """The per-match rows of a `push match --out` record; anything else is refused in one line naming `option`."""
    rows = read_json(path).get("rows") if path.is_file() and path.suffix == ".json" else None
    if not isinstance(rows, list):
        raise LemarioError(f"{option} {path}: not a matches.json of `lemario push match --out`: give one")
    return rows


def paired_rows(cfg: MatchConfig) -> dict[str, list[dict]]:
    """{opponent: the rows of `cfg.paired_with` against it}, read once before any match is played; a file that is not
    a `push match` record, or that shares no match seed with this run against some opponent, is refused here."""
    path = Path(cfg.paired_with)
    rows = recorded_rows(path, "--paired-with")
    seeds = {EVAL_SEED_BASE + cfg.seed + i // 2 for i in range(cfg.matches)}
    out = {o: [r for r in rows if r.get("opponent") == o] for o in cfg.opponent}
    for opponent, theirs in out.items():
        if not seeds & {r.get("seed") for r in theirs}:
            raise LemarioError(
                f"--paired-with {path} has no match against {opponent} on this run's seeds: pair runs of the same "
                "--seed and opponents"
            )
    return out


def short_name(name: str) -> str:
    """A player as the tables print it: a model by its run folder, an ensemble by its models' joined with '+'."""
    return "+".join(p.parent.name or str(p) for p in model_paths(name)) if name.startswith(MODEL) else name


def summary_line(name: str, opponent: str, s: dict) -> str:
    """One pairing's summary as the tables print it."""
    return (
        f"{name:>12} vs {opponent:<12} win {s['win_rate']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]  "
        f"W/D/L {s['wins']}/{s['draws']}/{s['losses']}  progress {s['mean_progress']:+.0f}  "
        f"pushes in {s['pushed_own']:.0%} of turns, T moved in {s['moved_own']:.0%} / {s['moved_opponent']:.0%}"
        + (f", the rule's turn kept in {s['guarded']:.0%} of plans" if "guarded" in s else "")
    )


def pool_seeds(per_seed: list[tuple[str, list[dict]]], opponent: str) -> dict:
    """Several seeds' rows against `opponent` ((label, rows) each) as one player: their pooled summary, with (several
    seeds) each seed's win rate and the sd between them, each seed's line printed before the pooled one."""
    pooled = summarize([r for _, rows in per_seed for r in rows])
    if len(per_seed) == 1:
        print(summary_line(per_seed[0][0], opponent, pooled), flush=True)
        return pooled
    rates = []
    for label, rows in per_seed:
        one = summarize(rows)
        rates.append(one["win_rate"])
        print("  " + summary_line(label, opponent, one), flush=True)
    pooled.update(per_seed=rates, seed_sd=float(np.std(rates, ddof=1)))
    print(summary_line(f"{len(per_seed)} seeds", opponent, pooled) + f"  seed sd {pooled['seed_sd']:.3f}", flush=True)
    return pooled


def paired_line(other: str, d: dict) -> str:
    """A paired difference (`paired`) as the tables print it, under the pairing's line."""
    return (
        f"{'':>12}    paired with {other}: {d['difference']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}] "
        f"over {d['matches']} matches ({d['changed']} changed), p {d['p_above_0']:.3f}"
    )


def match_main(cfg: MatchConfig) -> None:
    cfg.validate()
    others = paired_rows(cfg) if cfg.paired_with is not None else {}
    rows, summaries, per_player = [], {}, {}
    for opponent in cfg.opponent:
        got = {name: pairing(name, opponent, cfg) for name in cfg.player}
        per_player[opponent] = {name: summarize(r) for name, r in got.items()}
        pooled = [r for name in cfg.player for r in got[name]]
        rows += pooled
        summaries[opponent] = pool_seeds([(short_name(n), r) for n, r in got.items()], opponent)
        if others:
            d = summaries[opponent]["paired"] = paired(pooled, others[opponent])
            print(paired_line(str(cfg.paired_with), d), flush=True)
    if cfg.out is not None:
        record = {
            "config": as_json(cfg),
            **provenance(),
            "summaries": summaries,
            "per_player": per_player,
            "rows": rows,
        }
        write_json(cfg.out / "matches.json", record)


def table_main(cfg: TableConfig) -> None:
    cfg.validate()
    rows, cells = [], {}
    for name in cfg.players:
        for opponent in cfg.players:
            got = pairing(name, opponent, cfg)
            rows += got
            cells[f"{name} vs {opponent}"] = summarize(got)
            print(summary_line(name, opponent, cells[f"{name} vs {opponent}"]), flush=True)
    width = max(len(p) for p in cfg.players) + 2
    print("\nwin rate of the row against the column (a draw is half)")
    print(" " * width + "".join(f"{p:>{width}}" for p in cfg.players))
    for name in cfg.players:
        rates = "".join(f"{cells[f'{name} vs {o}']['win_rate']:>{width}.2f}" for o in cfg.players)
        print(f"{name:>{width}}{rates}")
    if cfg.out is not None:
        write_json(cfg.out / "table.json", {"config": as_json(cfg), **provenance(), "cells": cells, "rows": rows})
