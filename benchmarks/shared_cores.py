"""Two trainings sharing the cores: the `cpu` preset's world-model optimizer steps/s on its threads alone and beside a
second such training (the same model and threads: what an experiment or the test suite beside a flywheel is), with
OpenMP's idle threads spinning (libgomp's default: 300,000 spins before a thread sleeps), spinning less (3,000: what
`import lemario` sets unless told otherwise, `lemario/__init__.py`), or sleeping at once (OMP_WAIT_POLICY=PASSIVE).

    .venv/bin/python benchmarks/shared_cores.py            # ~4 minutes on 2 cores

Each figure is the mean +- sd over `reps` timed blocks after a warm-up, in a fresh process whose OpenMP runtime read
the policy when torch loaded it; "beside" starts the second training first and times once it has warmed up. The
pair's total is the timed training's rate plus the second's over the same blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.core.device import machine
from lemario.model.train import PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from train_wm import training_step  # noqa: E402

POLICIES = {
    "spin (libgomp default)": {},
    "spin 30k, then sleep": {"GOMP_SPINCOUNT": "30000"},
    "spin 3k, then sleep": {"GOMP_SPINCOUNT": "3000"},
    "sleep (PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
}
"""libgomp's settings of its idle threads: by default a thread spins 300,000 times before it sleeps."""
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@dataclass(frozen=True)
class Args:
    threads: int = 2
    """torch threads of each training (the flywheel's world model: 2)."""
    reps: int = 3
    steps: int = 8
    """Timed steps per repetition."""
    warmup: int = 3
    child: str = ""
    """Internal: 'timed' or 'burn', the process one measurement runs in."""


def _training(threads: int):
    """A step of the `cpu` preset's world model on a batch of its training shape, on `threads` torch threads."""
    torch.set_num_threads(threads)
    cfg = PRESETS["cpu"]
    return training_step(cfg, cfg.model, torch.device("cpu"))


def child(args: Args) -> None:
    """'burn': warm up, say so, then print each step's end time until killed; 'timed': print the blocks' steps/s and
    when the timed blocks began and ended."""
    step = _training(args.threads)
    for _ in range(args.warmup):
        step()
    if args.child == "burn":
        print("ready", flush=True)
        while True:
            step()
            print(time.time(), flush=True)
    rates, began = [], time.time()
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps / (time.perf_counter() - t0))
    print(json.dumps({"rates": rates, "began": began, "ended": time.time()}), flush=True)


def run(args: Args, policy: dict[str, str], beside: bool) -> tuple[list[float], float]:
    """One measurement in fresh processes with the OpenMP variables `policy` (none other): the timed training's
    rates, and the second training's steps/s over the same blocks (0 alone)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES} | policy
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--reps", str(args.reps)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    burner = None
    if beside:
        burner = subprocess.Popen([*cmd, "--child", "burn"], env=env, stdout=subprocess.PIPE, text=True)
        assert burner.stdout.readline().strip() == "ready"
    out = subprocess.run([*cmd, "--child", "timed"], env=env, capture_output=True, text=True, check=True).stdout
    timed = json.loads(out.strip().splitlines()[-1])
    if burner is None:
        return timed["rates"], 0.0
    burner.kill()
    ends = np.array([float(t) for t in burner.stdout.read().split()])
    began, ended = timed["began"], timed["ended"]
    return timed["rates"], float(((ends > began) & (ends <= ended)).sum() / (ended - began))


def _cell(rates: list[float]) -> str:
    return f"{np.mean(rates):.2f} ± {np.std(rates, ddof=1):.2f}"


def main(args: Args) -> None:
    if args.child:
        return child(args)
    print(
        f"{machine()}; the `cpu` preset's world model, batch {PRESETS['cpu'].batch_size}, {args.threads} threads each"
    )
    print(f"{'OpenMP idle threads':<24}{'alone':>13}{'beside another':>16}{'ratio':>7}{'pair':>7}  (steps/s)")
    for name, policy in POLICIES.items():
        alone, _ = run(args, policy, beside=False)
        shared, other = run(args, policy, beside=True)
        ratio = np.mean(shared) / np.mean(alone)
        print(
            f"{name:<24}{_cell(alone):>13}{_cell(shared):>16}{ratio:>7.2f}{np.mean(shared) + other:>7.2f}", flush=True
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
