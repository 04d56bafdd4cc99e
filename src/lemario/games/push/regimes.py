"""The data generator's behaviour regimes: what the acting disc does during one turn.

The seed's mix, by share of turns (the default): a contact push (40%), an approach that stops short of the T (25%),
no thrust (15%), jiggling near the T (10%), roaming far from the T (10%). A regime is drawn for each turn and picks
its target when the turn starts; then the disc steers toward it with the scripted players' controller, plus Gaussian
thrust noise (none under no thrust; `noise` is its standard deviation per axis and step). Two more regimes, not in
the seed's mix (share 0 by default), play a scripted pusher's turn (`chase_t`, `adversarial`) with the same noise: the
contact of real matches, where a pusher moves the T in 42-49% of turns and the seed's mix in 19%. Turns keep the
structure of real play: one disc acts for a whole turn while the other idles (the seed's lesson: alternating the
acting disc every frame left its model unable to tell which disc an action moved).
"""

from __future__ import annotations

import numpy as np

from lemario.games.push.board import DISC_RADIUS, SIZE, T_POS, WALL, clip_thrust
from lemario.games.push.opponents import adversarial, chase_t, drive_to, push_toward, route, t_reach

PUSHERS = {"chase_t": chase_t, "adversarial": adversarial}
REGIMES = ("contact_push", "approach_no_push", "null_thrust", "near_t", "far_from_t", *PUSHERS)
SHARES = (0.40, 0.25, 0.15, 0.10, 0.10, 0.0, 0.0)
"""The seed's mix (zero shares draw nothing and leave every other draw as it was)."""
NOISE = 0.15
"""Standard deviation of the thrust noise added to every step of a moving regime (the default)."""


def _on_board(p: np.ndarray) -> np.ndarray:
    margin = DISC_RADIUS + 2 * WALL
    return np.clip(p, margin, SIZE - margin)


class Turn:
    """One turn of one regime for disc `me`: call it with the state every step for the thrust."""

    def __init__(self, regime: str, state: np.ndarray, me: int, rng: np.random.Generator, noise: float = NOISE):
        self.regime, self.me, self.rng, self.noise = regime, me, rng, noise
        self.target: np.ndarray | None = None  # the point the disc heads for (none under no thrust)
        t = np.asarray(state[T_POS], np.float64)
        phi = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(phi), np.sin(phi)])
        if regime == "contact_push":  # push the T toward a random point of the board
            self.target = rng.uniform(0, SIZE, 2)
        elif regime == "approach_no_push":  # stop 10-40 units short of the T's side
            self.target = _on_board(t + direction * (t_reach(state, direction) + rng.uniform(10, 40)))
        elif regime == "near_t":  # points within 60 units of the T's side
            self.target = _on_board(t + direction * (t_reach(state, direction) + rng.uniform(0, 60)))
        elif regime == "far_from_t":  # points at least 150 units from the T's centre
            for _ in range(100):
                self.target = rng.uniform(0, SIZE, 2)
                if np.linalg.norm(self.target - t) >= 150:
                    break
        elif regime not in ("null_thrust", *PUSHERS):
            raise ValueError(f"unknown regime {regime!r}: use one of {', '.join(REGIMES)}")

    def __call__(self, state: np.ndarray) -> np.ndarray:
        if self.regime == "null_thrust":
            return np.zeros(2, np.float32)
        if self.regime in PUSHERS:
            a = PUSHERS[self.regime](state, self.me)
        elif self.regime == "contact_push":
            a = push_toward(state, self.me, self.target)
        else:
            a = drive_to(state, self.me, route(state, self.me, self.target))
        return clip_thrust(a + self.rng.normal(0, self.noise, 2)).astype(np.float32)


def draw_regime(rng: np.random.Generator, shares: tuple[float, ...] = SHARES) -> str:
    return REGIMES[rng.choice(len(REGIMES), p=shares)]
