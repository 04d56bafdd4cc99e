"""Does averaging several push models' readings read the board better than each model alone?

The push match's model player reads the board with its state head; given several models (`--player
model:A,B,C`) it reads the mean of their heads' readings (`lemario.control.push_players`). This prints each
model's reading error and the mean reading's on the frames `lemario probe` scores the state head on (the same
held-out episodes of the same corpus), and how alike the models' errors are: the correlation, over frames and
coordinates, of each pair's reading errors (1: they err together and averaging gains nothing; 0: independent
errors, and the mean of M readings errs about 1/sqrt(M) as much).

    .venv/bin/python benchmarks/push_reading_ensemble.py runs/push-wm-motion5k-s{0,1,2}/model.safetensors \\
        --corpus runs/push-probe-p75
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.data.buffer import EpisodeBuffer
from lemario.games.push.board import head_targets
from lemario.model.probe_fit import embed_frames
from lemario.model.probes import ProbeConfig, reading_error, split_frames
from lemario.model.world_model import load_world_model


@dataclass(frozen=True)
class Args:
    models: tyro.conf.Positional[tuple[Path, ...]]
    """Push world models (seeds of one recipe)."""
    corpus: Path = Path("runs/push-probe-p75")
    """A push corpus the models did not train on (`lemario push data`)."""


def line(name: str, e: dict) -> str:
    return (
        f"{name:<28} amber {e['amber_error']:5.1f}  cyan {e['cyan_error']:5.1f}  T {e['t_error']:4.1f} units  "
        f"T angle {e['t_angle_error_deg']:4.1f} deg"
    )


@torch.no_grad()
def main(args: Args) -> None:
    torch.set_num_threads(1)
    probe = ProbeConfig(checkpoint=args.models[0], corpus=args.corpus)
    buffer = EpisodeBuffer.load(args.corpus)
    scored_eps, idx, episode = split_frames(buffer, "probe", probe.score_fraction, probe.max_frames, probe.seed)
    idx = idx[scored_eps[episode]]
    states = buffer.labels[idx]  # (N, 14)
    reads = []
    for path in args.models:
        model = load_world_model(path)[0].eval()
        reads.append(model.decode_state(torch.from_numpy(embed_frames(model, buffer, idx)[1])).numpy())  # (N, 8)
    print(f"{len(idx)} frames of {args.corpus}'s held-out episodes")
    for path, out in zip(args.models, reads):
        print(line(path.parent.name, reading_error(out, states)))
    print(line(f"mean of {len(reads)}", reading_error(np.mean(reads, axis=0), states)))
    errors = [(out - head_targets(states))[:, :6].ravel() for out in reads]  # positions, in head units
    for (i, a), (j, b) in itertools.combinations(enumerate(errors), 2):
        print(f"error correlation, model {i} with model {j}: {np.corrcoef(a, b)[0, 1]:+.2f}")


if __name__ == "__main__":
    main(tyro.cli(Args))
