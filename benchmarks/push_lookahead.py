"""How much can any push player gain on the scripted pushers? A lookahead in the true simulator with a known opponent.

Issue 17 asks the world-model player to win at least half its matches against `chase_t` and `adversarial`. The
best model player reads the board with its state head and plays a rule on that reading (docs/RESULTS.md, sessions
29-38), and against these two a rule read exactly only ties or edges them. This prints how much room the game
leaves above that, with everything a model player could wish for: the true state, the true simulator, and the
opponent's own rule as its model of the reply.

The lookahead player, at the start of each of its turns, tries pushing the T toward each of a fan of points (the
bearing of its own goal turned by each of `angles` degrees, `push_toward`), plays that turn and then the
opponent's reply (the rule `reply`) out in the simulator from the true state, and keeps the intention that leaves
the largest lead (the opponent's goal distance minus its own); it then plays that intention closed-loop on the true
board for the turn. Rows: each scripted pusher and the lookahead against each pusher, on the match harness's
evaluation seeds and statistics (both sides, a draw is half a win, bootstrap 95% CI).

    .venv/bin/python benchmarks/push_lookahead.py                           # 100 matches per pairing, ~1 min of CPU
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tyro

from lemario.games.push.board import GOALS, PLAYERS, T_POS, Board, clip_thrust, goal_distances
from lemario.games.push.env import PushConfig, Seen
from lemario.games.push.opponents import Rule, push_toward, scripted
from lemario.play.push_match import EVAL_SEED_BASE, play_match
from lemario.play.stats import bootstrap_ci

PUSHERS = ("chase_t", "adversarial")


@dataclass(frozen=True)
class Args:
    matches: int = 100
    """Per pairing (half from each side)."""
    seed: int = 0
    """Offset of the match seeds (EVAL_SEED_BASE + seed + i)."""
    angles: tuple[float, ...] = (-90, -60, -30, 0, 30, 60, 90)
    """The intentions tried: the own goal's bearing from the T turned by these degrees."""


def intention(angle: float) -> Rule:
    """Push the T toward a point 200 units away along the own goal's bearing turned by `angle` degrees."""

    def rule(state: np.ndarray, me: int) -> np.ndarray:
        t = np.asarray(state[T_POS], np.float64)
        to_goal = GOALS[me] - t
        a = np.arctan2(to_goal[1], to_goal[0]) + np.radians(angle)
        return push_toward(state, me, t + 200 * np.array([np.cos(a), np.sin(a)]))

    return rule


def lead_after(state: np.ndarray, me: int, mine: Rule, reply: Rule, steps: int) -> float:
    """The lead (opponent's goal distance minus own) after `steps` of `mine`, then `steps` of the opponent's `reply`."""
    board = Board()
    board.set_state(state)
    for k in range(2 * steps):
        who = me if k < steps else 1 - me
        thrusts = np.zeros((len(PLAYERS), 2))
        thrusts[who] = clip_thrust((mine if who == me else reply)(board.state(), who))
        board.step(thrusts)
    d = goal_distances(board.state())
    return float(d[1 - me] - d[me])


def lookahead(reply: Rule, angles: tuple[float, ...], steps: int):
    """A player that picks its turn's intention by playing each one and the opponent's reply out in the simulator."""
    rules = [intention(a) for a in angles]
    chosen: list[Rule] = []

    def player(seen: Seen) -> np.ndarray:
        if seen.step_in_turn == 0 or not chosen:
            leads = [lead_after(seen.state, seen.me, r, reply, steps) for r in rules]
            chosen[:] = [rules[int(np.argmax(leads))]]
        return chosen[0](seen.state, seen.me)

    return player


def rule_player(name: str):
    """A scripted pusher as a player."""
    rule = scripted(name)
    return lambda seen: rule(seen.state, seen.me)


def win_rate(make_player, opponent: str, args: Args, game: PushConfig) -> tuple[float, float, float]:
    """`make_player()`'s win rate against the pusher `opponent` with its bootstrap 95% CI."""
    score = []
    for i in range(args.matches):
        seed, side = EVAL_SEED_BASE + args.seed + i // 2, i % 2
        me, them = make_player(), rule_player(opponent)
        m = play_match(*((me, them) if side == 0 else (them, me)), seed, game)
        score.append(0.5 if m["winner"] == -1 else float(m["winner"] == side))
    return (float(np.mean(score)), *bootstrap_ci(score))


def main(args: Args) -> None:
    game = PushConfig()
    players = {name: functools.partial(rule_player, name) for name in PUSHERS}
    for reply in PUSHERS:
        players[f"lookahead ({reply} replies)"] = lambda reply=reply: lookahead(
            scripted(reply), args.angles, game.steps_per_turn
        )
    print(f"win rate of the row against each pusher, {args.matches} matches per pairing [bootstrap 95% CI]")
    print(f"{'player':32s}" + "".join(f"{'vs ' + o:>22s}" for o in PUSHERS))
    for name, make in players.items():
        cells = [win_rate(make, o, args, game) for o in PUSHERS]
        print(f"{name:32s}" + "".join(f"{m:>8.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in cells))


if __name__ == "__main__":
    main(tyro.cli(Args))
