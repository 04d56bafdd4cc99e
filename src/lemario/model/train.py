"""`lemario train`: the world model from a corpus, end to end from pixels.

AdamW, gradient clipping, linear warm-up then cosine decay, bf16 autocast where asked (`precision`), a held-out
split by episode.
The run folder holds config.json (resolved), metrics.jsonl, tb/ (TensorBoard), ckpt_latest.{safetensors,json}
(model + optimizer + RNG states, to resume) and model.{safetensors,json} (the final weights). Re-running the
same command on the folder resumes from the last checkpoint; a folder holding a different run is refused.
Multi-GPU: `torchrun --nproc_per_node N -m lemario.cli train ...` (DDP, SyncBatchNorm on CUDA, SIGReg over the
global batch); the same command runs on CPU processes with gloo. The run's parts are in `lemario.model.trainer`;
this module holds its config, presets and the loop that logs, evaluates and saves on their clocks.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from tqdm import tqdm

from lemario.core import runlog
from lemario.core.device import resolve_device
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import check_writable, writer_lock
from lemario.core.progress import progress_bar
from lemario.data.tiers import check_weights
from lemario.model.loss import LossConfig
from lemario.model.trainer import Trainer
from lemario.model.world_model import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    corpus: Path = Path("runs/corpus-1-1")
    """Corpus folder (from `lemario collect`)."""
    out: Path = Path("runs/wm-1-1")
    """Run folder: checkpoints, metrics, TensorBoard; re-running resumes it."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 4000
    """Optimizer steps (the cosine schedule spans them)."""
    minutes: float = 0.0
    """Time budget: stop and checkpoint after this many minutes of training on `clock`, counted over every process
    that resumed the run (0: none). The step it stopped at is saved (`step` in model.json); `--stop-at` that step
    replays the same run on any machine, at any load."""
    clock: Literal["wall", "cpu"] = "wall"
    """What `minutes` counts: wall-clock time, or 'cpu': this process's CPU time over its torch threads (what the
    training takes alone on its threads, so other work on the machine slows the run without cutting its steps short;
    wall-clock on an accelerator, whose work the CPU clock does not see)."""
    stop_at: int = 0
    """Stop and checkpoint at this step without changing the schedule, which still spans `steps` (0: at `steps`)."""
    batch_size: int = 64
    """Windows per step (per process under DDP)."""
    k: int = 4
    """Steps per window: the predictor is trained over K-step rollouts."""
    lr: float = 3e-4
    weight_decay: float = 1e-3
    warmup: int = 200
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    """Share of episodes held out (chosen by a hash of the file name, so stable as the corpus grows)."""
    val_every: int = 250
    val_batches: int = 4
    recal_batches: int = 16
    """Training batches BatchNorm's running statistics are recomputed from before each validation or diagnosis."""
    diag_every: int = 500
    ckpt_every: int = 500
    """Steps between checkpoints (ckpt_latest, what a resume starts from)."""
    ckpt_minutes: float = 5.0
    """Also checkpoint when this many minutes have passed since the last one (0: on steps only): a kill loses at
    most this much work. Ctrl-C and SIGTERM checkpoint before the process exits."""
    log_every: int = 10
    snapshot_every: int = 0
    """Also keep the weights every this many steps (a multiple of val_every) as snapshots/step-NNNNNN.safetensors,
    for analyses along training (`lemario analyze straightening`); 0: none."""
    skip_unreadable: bool = False
    """Train on a corpus with unreadable episode files, leaving them out (by default they are an error)."""
    max_episodes: int = 0
    """Use at most this many episodes of the corpus (0: all)."""
    episodes: Path | None = None
    """A JSON list of corpus file names to train on (the flywheel's replay selection; default: the whole corpus)."""
    oversample: tuple[float, ...] = ()
    """Weights of the training windows by their episode's tier (`lemario.data.tiers.TIERS`: dead, stuck, mid,
    elite, flag), e.g. `1 1 1 2 4` draws an elite window twice and a flag window four times as often as others;
    empty: uniform over windows."""
    balance_levels: bool = False
    """Give every level of a multi-level corpus (e.g. one sub-corpus per level) the same share of the training
    windows, whatever its share of the frames."""
    init_from: Path | None = None
    """Warm start: the weights of this world-model checkpoint (same architecture) instead of a random init."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    precision: str = "fp32"
    """Arithmetic of the forward pass: 'fp32', 'bf16' (autocast; fast on CUDA and CPUs with AMX or AVX-512 BF16,
    slow elsewhere), or 'auto' (bf16 where the device computes it natively)."""
    threads: int = 0
    """torch CPU threads (0: torch's default, all cores): two trainings side by side take one core each."""
    progress: bool = True
    tensorboard: bool = True


_TINY_MODEL = ModelConfig(
    encoder_dim=64,
    latent_dim=32,
    projector_hidden=64,
    pred_hidden=64,
    pred_depth=2,
    reward_hidden=32,
    vit_depth=1,
    vit_heads=2,
)
_PUSH_MODEL = ModelConfig(
    encoder="vit",
    frame_stack=1,
    channels=3,
    image_size=64,
    vit_patch=8,
    vit_depth=3,
    vit_heads=4,
    encoder_dim=128,
    latent_dim=128,
    projector_hidden=1024,
    predictor="transformer",
    history=3,
    pred_depth=4,
    pred_heads=4,
    pred_hidden=512,
    continuous_actions=True,
    n_actions=4,
    reward_head=False,
    state_head=8,
    residual=True,
)
CPU_MODEL = ModelConfig(image_size=112, crop_top=32, pool=False, latent_dim=256, prev_action=True, residual=True)
"""The `cpu` preset's world model."""
_TINY_SCHEDULE = dict(
    steps=30, batch_size=8, warmup=5, val_every=15, recal_batches=4, diag_every=15, ckpt_every=10, log_every=5
)
"""Seconds on a CPU: the tiny presets' steps and clocks."""
_PUSH_LOSS = LossConfig(context=3, sigreg_lambda=0.09)
PRESETS = {
    "tiny": TrainConfig(
        model=_TINY_MODEL, loss=LossConfig(sigreg_projections=64), out=Path("runs/wm-tiny"), **_TINY_SCHEDULE
    ),
    # Issue 16's choice (docs/RESULTS.md, sessions 8-15): the previous action as an input, a 256-D embedding and
    # 112-px frames of the playfield (the HUD's 32 rows cut) without the max of two frames, nature CNN + MLP; 6,235
    # steps of a 7,500-step schedule, the length of the 3 measured seeds (2.14 steps/s on 2 cores of session 15's
    # host, ~50 min; 1.46 on session 20's, ~71: capped at 80). Residual predictor since session 22 (3 seeds each way,
    # session 21: one step beats "no change", height read 4 steps out, control 1401 ± 65 against 963 ± 345).
    # Its frames: CPU_MODEL.frames_env().
    "cpu": TrainConfig(model=CPU_MODEL, steps=7500, stop_at=6235, minutes=80.0),
    # The push game (`lemario push data`): a ViT over single RGB frames, the causal transformer over 3 of them.
    # Residual since session 26 (one step beats "no change", sessions 10, 21 and 26). The shipped model's recipe
    # (docs/RESULTS.md sessions 58-60): 5,000 steps, the discs' and the T's motion loss (session 30) and a reader of
    # the state on the ViT's patch tokens (3.5 board units against the CLS head's 8.5-11.4, 3 seeds); 1.15-1.2 s a step
    # alone on 2 cores of sessions 58-60's host (96-100 min for the 5,000; no run was alone from start to end), 1.65-2.0
    # on sessions 66-69's AMD host; capped at 115 min of wall clock for the 2-hour target, so a slower host stops early.
    # pretrained/push (session 69) is this recipe on a corpus with half its turns played by the scripted pushers and
    # thrust noise 0.5 (`push data --shares 0.2 0.125 0.075 0.05 0.05 0.25 0.25 --noise 0.5`: its provenance's
    # corpus_key; sessions 66-69), which ranks a turn's candidates better at contact.
    "push": TrainConfig(
        corpus=Path("runs/push-data"),
        out=Path("runs/push-wm"),
        model=replace(_PUSH_MODEL, state_points=3),
        loss=replace(_PUSH_LOSS, motion_weight=0.1),
        k=6,
        minutes=115.0,
        steps=5000,
    ),
    "push-tiny": TrainConfig(
        corpus=Path("runs/push-data"),
        out=Path("runs/push-wm-tiny"),
        model=replace(
            _PUSH_MODEL,
            encoder_dim=32,
            latent_dim=32,
            projector_hidden=64,
            vit_depth=1,
            pred_depth=1,
            pred_hidden=64,
            state_hidden=32,
        ),
        loss=replace(_PUSH_LOSS, sigreg_projections=64),
        k=4,
        **_TINY_SCHEDULE,
    ),
    "gpu": TrainConfig(
        model=ModelConfig(cnn="drqv2", latent_dim=192, encoder_dim=512, projector_hidden=2048, pred_hidden=1024),
        batch_size=128,
        precision="bf16",
        steps=60000,
        lr=5e-4,
        warmup=2000,
        val_every=1000,
        diag_every=2000,
        ckpt_every=2000,
    ),
}


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True when the flag is set on any rank (so all ranks stop at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a world model; returns the last validation metrics."""
    if cfg.snapshot_every < 0 or (cfg.snapshot_every and cfg.snapshot_every % cfg.val_every):
        raise LemarioError(
            f"--snapshot-every {cfg.snapshot_every} is not a multiple of --val-every {cfg.val_every}: snapshots are "
            "taken where validation recalibrates BatchNorm; use a multiple (or 0 for none)"
        )
    check_weights(cfg.oversample)
    rank, world = _dist_info()
    device = resolve_device(cfg.device)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank == 0:
        check_writable(cfg.out)
    try:
        with writer_lock(cfg.out) if rank == 0 else nullcontext(), torch_threads(cfg.threads):
            trainer = Trainer(cfg, device, rank, world)
            trainer.resume_or_init()
            val = _run(trainer)
        if own_group:
            dist.barrier()  # every rank done (rank 0 has saved) before the group goes
        return val
    finally:
        if own_group:  # a process group left to interpreter exit can abort it (gloo's threads)
            dist.destroy_process_group()


class _StopRequest:
    """Ctrl-C or SIGTERM during training asks the loop to stop after the current step (a second one stops at once)."""

    def __init__(self):
        self.asked, self.previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may handle signals
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _run(trainer: Trainer) -> dict:
    """The loop: a step, then whatever is due on the step clocks (log, validation, diagnostics, checkpoint) and the
    wall clock (checkpoint, budget); a stop request checkpoints and raises KeyboardInterrupt."""
    cfg, rank = trainer.cfg, trainer.rank
    writer = None
    if rank == 0 and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # slow to import: only when asked for

        writer = SummaryWriter(str(cfg.out / "tb"))
    saved = trainer.start_clock()  # the budget counts training, not loading the corpus

    def log(metrics: dict, step: int) -> None:
        if rank == 0:
            runlog.append_row(cfg.out / runlog.NAME, {"step": step, "time": round(trainer.wall_seconds, 2), **metrics})
            for k, v in metrics.items():
                if writer:
                    writer.add_scalar(k, v, step)

    dtype = trainer.dtype
    autocast = torch.autocast(trainer.device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
    bar = progress_bar(total=end, initial=trainer.step, progress=cfg.progress and rank == 0, unit="step")
    trainer.module.train()
    with _StopRequest() as stop:
        while trainer.step < end:
            over_budget = bool(cfg.minutes) and trainer.seconds > cfg.minutes * 60  # a resumed run's earlier time too
            if _any_rank(over_budget or stop.asked, trainer.world, trainer.device):
                break
            metrics = trainer.train_step(autocast)
            step, last = trainer.step, trainer.step == cfg.steps
            if step % cfg.log_every == 0 or last:
                log(metrics, step)
            losses = {k: metrics[f"loss/{k}"] for k in ("pred", "sigreg", "reward", "state") if f"loss/{k}" in metrics}
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
            bar.update(1)
            val, diag = step % cfg.val_every == 0 or last, step % cfg.diag_every == 0 or last
            held_out, warnings = trainer.evaluate(val=val, diag=diag)
            if held_out:
                log(held_out, step)
            trainer.save_snapshot()
            for w in warnings if rank == 0 else ():
                tqdm.write(f"step {step}: WARNING: {w}")
            if step % cfg.ckpt_every == 0 or (cfg.ckpt_minutes and time.time() - saved > cfg.ckpt_minutes * 60):
                trainer.save_latest()
                saved = time.time()
    bar.close()
    if stop.asked:
        trainer.save_latest()
        if rank == 0:
            print(f"stopped at step {trainer.step}: {trainer.latest} saved", flush=True)
        raise KeyboardInterrupt
    if trainer.step < end and rank == 0:
        print(f"time budget of {cfg.minutes} min ({trainer.clock_name} clock) reached at step {trainer.step}")
    last_val, _ = trainer.evaluate(val=True, diag=False)
    log(last_val, trainer.step)
    trainer.save_latest()
    trainer.save_model()
    if writer:
        writer.close()
    return last_val


def train_main(cfg: TrainConfig) -> None:
    val = train(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"world model saved to {cfg.out / 'model.safetensors'}")
        for k, v in val.items():
            print(f"  {k:<24}{v:.4f}")
