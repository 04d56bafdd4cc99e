"""Coverage of the variance components' 95% intervals (`lemario.play.variance.component_cis`) in simulation: the
study's design (3 world models x 3 policies x 30 episodes) drawn from known components, with and without a
world-model component, `trials` times each; the share of intervals that hold the true value.

    .venv/bin/python scripts/variance_coverage.py          # ~1 minute
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tyro

from lemario.play.variance import COMPONENTS, Components, component_cis, simulate


@dataclass(frozen=True)
class Args:
    trials: int = 400
    draws: int = 2000
    seed: int = 2


def main(args: Args) -> None:
    cases = {
        "world-model sd 80": Components(80.0**2, 60.0**2, 40.0**2, 300.0**2),
        "world-model sd 0": Components(0.0, 60.0**2, 40.0**2, 300.0**2),
    }
    print(f"{'case':<20}" + "".join(f"{c:>13}" for c in COMPONENTS))
    for name, truth in cases.items():
        rng, hits = np.random.default_rng(args.seed), np.zeros(len(COMPONENTS))
        for i in range(args.trials):
            cis = component_cis(simulate(truth, 3, 3, 30, rng), draws=args.draws, seed=i)
            hits += [lo <= getattr(truth, c) <= hi for c, (lo, hi) in cis.items()]
        print(f"{name:<20}" + "".join(f"{h / args.trials:>13.3f}" for h in hits))


if __name__ == "__main__":
    main(tyro.cli(Args))
