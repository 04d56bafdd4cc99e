"""One world-model training run's state and its parts: build, resume or initialize, an optimizer step, the
held-out evaluation, checkpoints and the log. `lemario.model.train` drives it on its clocks.

Only rank 0 writes (checkpoints, metrics.jsonl, TensorBoard); under DDP every rank holds the same weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lemario.core import checkpoint, runlog
from lemario.core.device import peak_rss_gib, precision_dtype, to_torch
from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.core.runconfig import as_json, check_same_run, run_key
from lemario.data.buffer import EpisodeBuffer, split_windows, window_probabilities
from lemario.model.diagnose import diagnose, holds_a
from lemario.model.loss import LossConfig, world_model_loss
from lemario.model.world_model import ModelConfig, WorldModel

BOOKKEEPING = (
    "out",
    "progress",
    "tensorboard",
    "device",
    "threads",
    "minutes",
    "clock",
    "stop_at",
    "ckpt_minutes",
    "snapshot_every",
)
"""TrainConfig fields that do not change what a run learns: a resume may change them."""
VAL_SEED = 12345  # held-out windows: the same ones at every validation


class LossModule(nn.Module):
    """The model and its loss behind one forward(), so DDP sees every parameter used."""

    def __init__(self, model: WorldModel, cfg: LossConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return world_model_loss(self.model, batch, self.cfg, generator)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over `cfg.warmup` steps, then cosine decay to 0 at `cfg.steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def read_episode_list(path: Path | None) -> list[str] | None:
    """The corpus file names of a JSON list (the flywheel's replay selection), or None for the whole corpus."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise LemarioError(
            f"cannot read the episode list {path} ({e}): pass a JSON list of corpus file names"
        ) from None


def check_model_fits(model: ModelConfig, buffer: EpisodeBuffer) -> None:
    """Refuse a model whose actions, heads or input do not match the corpus's game, naming the fix."""
    push = buffer.game == "push"
    fix = "use --preset push" if push else "use a Mario preset (tiny, cpu, gpu)"
    if push != model.continuous_actions or push == model.reward_head or push != bool(model.state_head):
        raise LemarioError(f"corpus {buffer.game}: the model's actions and heads are for the other game; {fix}")
    if push and buffer.actions.shape[1] != model.n_actions:
        raise LemarioError(
            f"the corpus's actions have {buffer.actions.shape[1]} floats, the model takes {model.n_actions}: "
            f"set --model.n-actions {buffer.actions.shape[1]}"
        )
    if not push and int(buffer.actions.max()) + 1 > model.n_actions:
        raise LemarioError(
            f"the corpus uses {int(buffer.actions.max()) + 1} actions but the model has {model.n_actions}: "
            "set --model.n-actions"
        )
    if (buffer.frames.ndim == 4) != (model.channels > 1) or buffer.frames.shape[1] != model.image_size:
        raise LemarioError(
            f"the corpus's frames are {buffer.frames.shape[1:]}, the model takes {model.image_size} px with "
            f"{model.channels} channels: {fix}"
        )
    if buffer.subpixel != model.subpixel:
        flag = "--model.subpixel" if buffer.subpixel else "--model.no-subpixel"
        raise LemarioError(
            f"the corpus's frames are drawn {'with' if buffer.subpixel else 'without'} --subpixel, the model's config "
            f"says {'with' if model.subpixel else 'without'}: pass {flag}"
        )
    if (buffer.crop_top, buffer.pool) != (model.crop_top, model.pool):
        raise LemarioError(
            f"the corpus's frames are cut {buffer.crop_top} rows from the top, {'' if buffer.pool else 'not '}"
            f"max-pooled, the model's config says {model.crop_top}, {'' if model.pool else 'not '}max-pooled: pass "
            f"--model.crop-top {buffer.crop_top} {'--model.pool' if buffer.pool else '--model.no-pool'}"
        )


def budget_clock(kind: str, device: torch.device) -> tuple[str, Callable[[], float]]:
    """The clock a time budget counts on, by name: wall-clock seconds, or (kind 'cpu' on a CPU device) this
    process's CPU seconds over its torch threads, which other processes on the machine do not advance. Read the
    thread count inside the run's `torch_threads`."""
    if kind == "cpu" and device.type == "cpu":
        threads = torch.get_num_threads()
        return "cpu", lambda: time.process_time() / threads
    return "wall", time.time


class Trainer:
    """Data, model, optimizer, sampler and step of one run (cfg: a `lemario.model.train.TrainConfig`)."""

    def __init__(self, cfg, device: torch.device, rank: int, world: int):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.dtype = precision_dtype(cfg.precision, device)  # checked before the corpus is read
        files = read_episode_list(cfg.episodes)
        self.buffer = EpisodeBuffer.load(
            cfg.corpus, max_episodes=cfg.max_episodes or None, files=files, skip_unreadable=cfg.skip_unreadable
        )
        self.train_starts, self.val_starts = split_windows(self.buffer, cfg.k, cfg.val_fraction)
        self.train_p = None  # (n,) probabilities of the training windows; None: uniform
        if (cfg.oversample or cfg.balance_levels) and self.buffer.game == "mario":
            self.train_p = window_probabilities(self.buffer, self.train_starts, cfg.oversample, cfg.balance_levels)
        check_model_fits(cfg.model, self.buffer)
        torch.manual_seed(cfg.seed)
        self.model = WorldModel(cfg.model).to(device)
        self.module: nn.Module = LossModule(self.model, cfg.loss)
        if world > 1:
            if device.type == "cuda":  # SyncBatchNorm is CUDA-only: on CPU (gloo) each rank normalizes its own batch
                self.module = nn.SyncBatchNorm.convert_sync_batchnorm(self.module).to(device)
            self.module = nn.parallel.DistributedDataParallel(self.module)
            self.model = self.module.module.model
        params = list(self.model.named_parameters())
        decay = [p for _, p in params if p.ndim >= 2]
        no_decay = [p for _, p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr)
        self.rng = np.random.default_rng([cfg.seed, rank])
        self.step = 0
        self.seconds_before = 0.0  # training seconds of the processes before this one (a resumed run's)
        self.wall_before = 0.0  # their wall-clock seconds (the log's time axis continues across resumes)
        self.clock_name, self.clock = budget_clock(cfg.clock, device)
        self.start_clock()
        self.last_val: dict = {}
        self.latest = cfg.out / "ckpt_latest.safetensors"

    def start_clock(self) -> float:
        """Start counting this process's budget seconds from now; the wall-clock time now."""
        self.started, self.wall_started = self.clock(), time.time()
        return self.wall_started

    @property
    def wall_seconds(self) -> float:
        """Wall-clock seconds this run has trained, over every process that resumed it (the log's `time`)."""
        return self.wall_before + time.time() - self.wall_started

    @property
    def seconds(self) -> float:
        """Seconds this run has trained on its budget clock, over every process that resumed it (what --minutes
        budgets)."""
        return self.seconds_before + self.clock() - self.started

    @property
    def held_out(self) -> np.ndarray:
        """Window starts of the held-out episodes (the training ones when nothing is held out)."""
        return self.val_starts if len(self.val_starts) else self.train_starts

    def resume_or_init(self) -> None:
        """Continue from ckpt_latest (its rows logged after it dropped), or warm-start / keep the random init and
        write config.json. A folder holding another run is refused, naming what differs."""
        cfg, config_path = self.cfg, self.cfg.out / "config.json"
        key = run_key(cfg, BOOKKEEPING)
        if config_path.exists():
            defaults = run_key(type(cfg)(), BOOKKEEPING)
            stored = read_json(config_path)["run_key"]
            if "model" in stored and "flag_head" not in stored["model"]:  # a run from before the flag head had none
                stored = {**stored, "model": {**stored["model"], "flag_head": False}}
            check_same_run(stored, key, defaults, cfg.out, "world-model run")
        if self.latest.exists():
            tensors, meta = checkpoint.load(self.latest, kind="world_model_training")
            model_tensors = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
            checkpoint.load_state(self.model, model_tensors, self.latest)
            checkpoint.load_optimizer(self.opt, tensors, "optim")
            torch.set_rng_state(tensors["rng/torch"])
            self.step, self.seconds_before = meta["step"], meta.get("seconds", 0.0)
            self.wall_before = meta.get("wall_seconds", self.seconds_before)  # a checkpoint without it: its budget's
            if self.rank == 0:
                self.rng.bit_generator.state = meta["numpy_rng"]
                runlog.keep_rows(cfg.out / runlog.NAME, lambda r: r["step"] <= self.step)
                print(f"resuming {cfg.out} at step {self.step}")
            else:  # only rank 0's sampler state is saved; the others continue on a fresh stream of their own
                self.rng = np.random.default_rng([cfg.seed, self.rank, self.step])
            return
        if cfg.init_from is not None:
            init, _ = checkpoint.load(cfg.init_from, kind="world_model")
            checkpoint.load_state(self.model, init, cfg.init_from)
            if self.rank == 0:
                print(f"warm start from {cfg.init_from}")
        self.model.see_levels(np.unique(self.buffer.levels(self.buffer.starts)))  # (a resumed model has them saved)
        if self.rank == 0:
            record = {
                "run_key": key,
                "config": as_json(cfg),
                "corpus_episodes": len(self.buffer.files),
                "train_windows": len(self.train_starts),
                "val_windows": len(self.val_starts),
                "world_size": self.world,
            }
            write_json(config_path, record)

    def train_step(self, autocast) -> dict[str, float]:
        """One optimizer step on a fresh batch; returns its metrics (with the learning rate and gradient norm)."""
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, cfg)
        sample = self.buffer.sample(
            cfg.batch_size, cfg.k, cfg.model.frame_stack, self.rng, valid=self.train_starts, p=self.train_p
        )
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + self.step)  # all ranks alike
        with autocast:
            loss, metrics = self.module(to_torch(sample, self.device), generator)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.step += 1
        if not math.isfinite(metrics["loss/total"]):
            raise LemarioError(
                f"the loss diverged at step {self.step} ({metrics['loss/total']}): lower --lr or check the corpus"
            )
        return {**metrics, "train/lr": self.opt.param_groups[0]["lr"], "train/grad_norm": float(grad_norm)}

    def evaluate(self, val: bool, diag: bool) -> tuple[dict[str, float], list[str]]:
        """BatchNorm statistics recomputed (eval mode uses them), then the held-out losses (kept as the checkpoint's
        metrics) and the collapse diagnostics (`lemario.model.diagnose`) as asked; returns metrics and warnings."""
        metrics: dict[str, float] = {}
        warnings: list[str] = []
        if not (val or diag):
            return metrics, warnings
        cfg = self.cfg
        recalibrate_batchnorm(
            self.model,
            _sample_batches(self.buffer, self.train_starts, cfg, self.device, cfg.recal_batches, 777),
            cfg.loss,
        )
        if val:
            self.last_val = validate(self.model, self.buffer, self.held_out, cfg, self.device, VAL_SEED)
            self.last_val["sys/peak_rss_gib"] = peak_rss_gib()  # the corpus in memory, and training's own
            metrics.update(self.last_val)
        if diag:
            rng = np.random.default_rng(VAL_SEED + 1)
            sample = self.buffer.sample(
                min(256, 4 * cfg.batch_size), cfg.k, cfg.model.frame_stack, rng, valid=self.held_out
            )
            diag_metrics, warnings = diagnose(self.model, to_torch(sample, self.device), holds_a(self.buffer))
            metrics.update(diag_metrics)
        return metrics, warnings

    def save_latest(self) -> None:
        """ckpt_latest: model, optimizer, torch and sampler RNG states, step (rank 0)."""
        if self.rank != 0:
            return
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(checkpoint.optimizer_tensors(self.opt, "optim"))
        tensors["rng/torch"] = torch.get_rng_state()
        meta = {
            "kind": "world_model_training",
            "step": self.step,
            "seconds": self.seconds,
            "wall_seconds": self.wall_seconds,
            "numpy_rng": self.rng.bit_generator.state,
            "model_config": as_json(self.cfg).get("model"),
            "metrics": self.last_val,
        }
        checkpoint.save(self.latest, tensors, meta)

    def save_snapshot(self) -> None:
        """snapshots/step-NNNNNN.safetensors, on the steps `snapshot_every` keeps (after validation's BatchNorm
        recalibration)."""
        every = self.cfg.snapshot_every
        if every and self.step % every == 0:
            self.save_model(self.cfg.out / "snapshots" / f"step-{self.step:06d}.safetensors")

    def save_model(self, path: Path | None = None) -> None:
        """model.safetensors (or `path`, a snapshot): the weights, eval-mode statistics and the run's config
        (rank 0)."""
        if self.rank != 0:
            return
        cfg = self.cfg
        meta = {
            "kind": "world_model",
            "config": as_json(cfg)["model"],
            "step": self.step,
            "metrics": self.last_val,
            "corpus": str(cfg.corpus),
            "train_config": as_json(cfg),
        }
        if self.buffer.game == "mario":  # what the controllers may choose (`lemario.model.world_model.known_actions`)
            taken = self.buffer.actions[self.buffer.actions >= 0]  # (-1 marks an episode's last frame)
            meta["action_counts"] = np.bincount(taken, minlength=cfg.model.n_actions).tolist()
        checkpoint.save(path or cfg.out / "model.safetensors", self.model.state_dict(), meta)


def _sample_batches(buffer: EpisodeBuffer, starts: np.ndarray, cfg, device: torch.device, batches: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(batches):
        sample = buffer.sample(cfg.batch_size, cfg.k, cfg.model.frame_stack, rng, valid=starts)
        yield i, to_torch(sample, device)


@torch.no_grad()
def recalibrate_batchnorm(model: WorldModel, batches: Iterable[tuple[int, dict]], loss: LossConfig) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over training batches (i, batch) (as
    `_sample_batches` yields them) with the current weights.

    The running averages kept during training lag behind the weights they describe: measured on a held-out
    batch at step 500 of the cpu preset, eval mode gave prediction MSE 0.31 and SIGReg 11.5 where the batch
    statistics gave 0.08 and 2.2. Planning, probes and validation all use eval mode, so they get these.
    The training trajectory is unaffected (train mode never reads running statistics).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was = model.training
    model.train()
    for i, batch in batches:
        world_model_loss(model, batch, loss, torch.Generator(device=batch["obs"].device).manual_seed(i))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was)


@torch.no_grad()
def validate(
    model: WorldModel, buffer: EpisodeBuffer, starts: np.ndarray, cfg, device: torch.device, seed: int
) -> dict:
    """Held-out losses on the same windows every time (a fixed generator), BatchNorm in eval mode."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    for i, batch in _sample_batches(buffer, starts, cfg, device, cfg.val_batches, seed):
        _, m = world_model_loss(model, batch, cfg.loss, torch.Generator(device=device).manual_seed(i))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.val_batches
    model.train(was)
    return {f"val/{k}": v for k, v in sums.items()}
