"""How precisely must a player read the push board? A scripted rule reading the true state through Gaussian noise.

The world-model player reads the board with its state head and plays a scripted rule on that reading, or searches
around the rule's turn (docs/RESULTS.md: the shipped model's token reader reads the discs ~3.5 board units off and
the T ~2.7 on held-out frames). This prints the rule's (`--rule`, chase_t by default) win rate (bootstrap 95% CI,
the match harness's statistics: both sides, a draw is half a win) against an opponent when every reading of the
discs' and the T's positions gets independent noise of each given standard deviation, fresh every step (the T gets
half the discs' noise, and `angle_sd` degrees on its angle per 10 units of its position's noise). It sets the
precision a reading needs, not what the head's own errors do: those are correlated over steps.

    .venv/bin/python benchmarks/push_reading_noise.py                        # passive, 50 matches per level
    .venv/bin/python benchmarks/push_reading_noise.py --opponent chase_t
    .venv/bin/python benchmarks/push_reading_noise.py --rule adversarial --opponent adversarial --disc-sd 0 2 3.5 5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tyro

from lemario.games.push.board import DISC_SLICE, T_ANGLE, T_POS
from lemario.games.push.env import PushConfig
from lemario.games.push.opponents import scripted
from lemario.play.push_match import EVAL_SEED_BASE, play_match
from lemario.play.stats import bootstrap_ci


@dataclass(frozen=True)
class Args:
    rule: str = "chase_t"
    """The scripted rule that reads the noisy board."""
    opponent: str = "passive"
    matches: int = 50
    """Per noise level (half from each side)."""
    seed: int = 0
    """Offset of the match seeds (EVAL_SEED_BASE + seed + i)."""
    disc_sd: tuple[float, ...] = (0, 5, 10, 20, 27, 40)
    """Noise on each disc's position (board units); the T gets half of it."""
    angle_sd: float = 3.0
    """Degrees of noise on the T's angle per 10 units of noise on its position."""


def noisy_rule(rule: str, disc_sd: float, angle_sd: float, seed: int):
    rng, act = np.random.default_rng(seed), scripted(rule)

    def player(seen):
        s = seen.state.copy()
        for sl in DISC_SLICE:
            s[sl] += rng.normal(0, disc_sd, 2)
        s[T_POS] += rng.normal(0, disc_sd / 2, 2)
        s[T_ANGLE] += np.deg2rad(rng.normal(0, angle_sd * disc_sd / 20))
        return act(s, seen.me)

    return player


def main(args: Args) -> None:
    print(f"{args.rule} reading through noise vs {args.opponent}, {args.matches} matches per level")
    for sd in args.disc_sd:
        score = []
        for i in range(args.matches):
            seed, side = EVAL_SEED_BASE + args.seed + i // 2, i % 2
            me, other = noisy_rule(args.rule, sd, args.angle_sd, seed), scripted(args.opponent, seed + 1)
            them = lambda seen, other=other: other(seen.state, seen.me)  # noqa: E731
            m = play_match(*((me, them) if side == 0 else (them, me)), seed, PushConfig())
            score.append(0.5 if m["winner"] == -1 else float(m["winner"] == side))
        lo, hi = bootstrap_ci(score)
        print(f"discs ± {sd:>4g}, T ± {sd / 2:>4g} units: win {np.mean(score):.2f} [{lo:.2f}, {hi:.2f}]")


if __name__ == "__main__":
    main(tyro.cli(Args))
