"""`lemario train`: the world model from a corpus, end to end from pixels.

AdamW, gradient clipping, linear warm-up then cosine decay, bf16 autocast on CUDA, a held-out split by episode.
The run folder holds config.json (resolved), metrics.jsonl, tb/ (TensorBoard), ckpt_latest.{safetensors,json}
(model + optimizer + RNG states, to resume) and model.{safetensors,json} (the final weights). Re-running the
same command on the folder resumes from the last checkpoint; a folder holding a different run is refused.
Multi-GPU: `torchrun --nproc_per_node N -m lemario.cli train ...` (DDP, SyncBatchNorm on CUDA, SIGReg over the
global batch); the same command runs on CPU processes with gloo.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from . import checkpoint
from .buffer import EpisodeBuffer
from .corpus import atomic_write_text, check_writable, writer_lock
from .diagnose import diagnose
from .errors import LemarioError
from .world_model import LossConfig, ModelConfig, WorldModel, world_model_loss


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
    """Wall-clock budget: stop and checkpoint after this many minutes (0: none). The step it stopped at is saved
    (`step` in model.json); `--stop-at` that step replays the same run on any machine, at any load."""
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
    diag_every: int = 500
    ckpt_every: int = 500
    log_every: int = 10
    max_episodes: int = 0
    """Use at most this many episodes of the corpus (0: all)."""
    episodes: Path | None = None
    """A JSON list of corpus file names to train on (the flywheel's replay selection; default: the whole corpus)."""
    init_from: Path | None = None
    """Warm start: the weights of this world-model checkpoint (same architecture) instead of a random init."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    progress: bool = True
    tensorboard: bool = True

    def run_key(self) -> dict:
        """What makes two invocations the same run (not where it logs or how it shows progress)."""
        d = json.loads(json.dumps(asdict(self), default=str))
        for k in ("out", "progress", "tensorboard", "device", "minutes", "stop_at"):
            d.pop(k)
        return d


_TINY_MODEL = ModelConfig(encoder_dim=64, latent_dim=32, projector_hidden=64, pred_hidden=64, pred_depth=2, reward_hidden=32,
                          vit_depth=1, vit_heads=2)
PRESETS = {
    "tiny": TrainConfig(model=_TINY_MODEL, loss=LossConfig(sigreg_projections=64), steps=30, batch_size=8, warmup=5,
                        val_every=10, diag_every=15, ckpt_every=10, log_every=5, out=Path("runs/wm-tiny")),
    "cpu": TrainConfig(minutes=55.0, steps=7500),  # nature CNN + MLP: ~2.5 steps/s on 2 cores (benchmarks/train_wm.py)
    "gpu": TrainConfig(model=ModelConfig(cnn="drqv2", latent_dim=192, encoder_dim=512, projector_hidden=2048, pred_hidden=1024),
                       batch_size=128, steps=60000, lr=5e-4, warmup=2000, val_every=1000, diag_every=2000, ckpt_every=2000),
}


def is_val_episode(file: str, fraction: float) -> bool:
    return zlib.crc32(file.encode()) % 10_000 < fraction * 10_000


def split_windows(buffer: EpisodeBuffer, k: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Window starts of training and held-out episodes."""
    val_eps = np.array([is_val_episode(f, fraction) for f in buffer.files])
    if fraction > 0 and not val_eps.any() and len(val_eps) > 1:
        val_eps[-1] = True  # tiny corpora: hold out at least one episode
    starts = buffer.window_starts(k)
    episode_of = np.searchsorted(buffer.starts, starts, side="right") - 1
    train, val = starts[~val_eps[episode_of]], starts[val_eps[episode_of]]
    if len(train) == 0:
        raise LemarioError(f"no training windows of {k} steps: collect more or longer episodes")
    return train, val


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LossModule(nn.Module):
    """The model and its loss behind one forward(), so DDP sees every parameter used."""

    def __init__(self, model: WorldModel, cfg: LossConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return world_model_loss(self.model, batch, self.cfg, generator)


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


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
    rank, world = _dist_info()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank == 0:
        check_writable(cfg.out)
    lock = writer_lock(cfg.out) if rank == 0 else nullcontext()
    with lock:
        return _train(cfg, device, rank, world)


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int) -> dict:
    files = None
    if cfg.episodes is not None:
        try:
            files = json.loads(Path(cfg.episodes).read_text())
        except (OSError, ValueError) as e:
            raise LemarioError(f"cannot read the episode list {cfg.episodes} ({e}): pass a JSON list of corpus file names") from None
    buffer = EpisodeBuffer.load(cfg.corpus, max_episodes=cfg.max_episodes or None, files=files)
    train_starts, val_starts = split_windows(buffer, cfg.k, cfg.val_fraction)
    n_actions = int(buffer.actions.max()) + 1
    if n_actions > cfg.model.n_actions:
        raise LemarioError(f"the corpus uses {n_actions} actions but the model has {cfg.model.n_actions}: set --model.n-actions")

    torch.manual_seed(cfg.seed)
    model = WorldModel(cfg.model).to(device)
    module: nn.Module = LossModule(model, cfg.loss)
    if world > 1:
        if device.type == "cuda":  # PyTorch's SyncBatchNorm is CUDA-only: on CPU (gloo) each rank normalizes its own batch
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module).to(device)
        module = nn.parallel.DistributedDataParallel(module)
        model = module.module.model
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, rank])
    step = 0

    latest = cfg.out / "ckpt_latest.safetensors"
    config_path = cfg.out / "config.json"
    key = cfg.run_key()
    if config_path.exists() and json.loads(config_path.read_text())["run_key"] != key:
        raise LemarioError(f"{cfg.out} holds a run with another config: use a new --out folder (or delete {cfg.out})")
    if latest.exists():
        tensors, meta = checkpoint.load(latest, kind="world_model_training")
        checkpoint.load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, latest)
        checkpoint.load_optimizer(opt, tensors, "optim")
        torch.set_rng_state(tensors["rng/torch"])
        step = meta["step"]
        if rank == 0:
            rng.bit_generator.state = meta["numpy_rng"]
        else:  # only rank 0's sampler state is saved; the others continue on a fresh stream of their own
            rng = np.random.default_rng([cfg.seed, rank, step])
        if rank == 0:
            print(f"resuming {cfg.out} at step {step}")
    else:
        if cfg.init_from is not None:
            init, _ = checkpoint.load(cfg.init_from, kind="world_model")
            checkpoint.load_state(model, init, cfg.init_from)
            if rank == 0:
                print(f"warm start from {cfg.init_from}")
    if not latest.exists() and rank == 0:
        atomic_write_text(config_path, json.dumps({"run_key": key, "config": json.loads(json.dumps(asdict(cfg), default=str)),
                                                   "corpus_episodes": len(buffer.files), "train_windows": len(train_starts),
                                                   "val_windows": len(val_starts), "world_size": world}, indent=2))

    writer = None
    if rank == 0 and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(cfg.out / "tb"))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    val_rng_seed = 12345
    t_start, last_val = time.time(), {}
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
    bar = tqdm(total=end, initial=step, disable=not cfg.progress or rank != 0, dynamic_ncols=True, unit="step")

    def save_latest():
        if rank != 0:
            return
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        tensors.update(checkpoint.optimizer_tensors(opt, "optim"))
        tensors["rng/torch"] = torch.get_rng_state()
        checkpoint.save(latest, tensors, {"kind": "world_model_training", "step": step, "numpy_rng": rng.bit_generator.state,
                                          "model_config": asdict(cfg.model), "metrics": last_val})

    def log(metrics: dict, at: int):
        if rank != 0:
            return
        with open(cfg.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": at, "time": round(time.time() - t_start, 2), **metrics}) + "\n")
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(k, v, at)

    module.train()
    while step < end:
        if cfg.minutes and _any_rank(time.time() - t_start > cfg.minutes * 60, world, device):
            if rank == 0:
                print(f"time budget of {cfg.minutes} min reached at step {step}")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = to_torch(buffer.sample(cfg.batch_size, cfg.k, cfg.model.frame_stack, rng, valid=train_starts), device)
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)  # same directions on all ranks
        with autocast:
            loss, metrics = module(batch, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if not math.isfinite(metrics["loss/total"]):
            raise LemarioError(f"the loss diverged at step {step} ({metrics['loss/total']}): lower --lr or check the corpus")
        if step % cfg.log_every == 0 or step == cfg.steps:
            log({**metrics, "train/lr": opt.param_groups[0]["lr"], "train/grad_norm": float(grad_norm)}, step)
        bar.set_postfix({"pred": f"{metrics['loss/pred']:.4f}", "sigreg": f"{metrics['loss/sigreg']:.2f}",
                         "reward": f"{metrics['loss/reward']:.3f}"}, refresh=False)
        bar.update(1)
        held_out = val_starts if len(val_starts) else train_starts
        evaluate_now = step % cfg.val_every == 0 or step % cfg.diag_every == 0 or step == cfg.steps
        if evaluate_now:
            recalibrate_batchnorm(model, buffer, train_starts, cfg, device)
        if step % cfg.val_every == 0 or step == cfg.steps:
            last_val = validate(model, buffer, held_out, cfg, device, val_rng_seed)
            log(last_val, step)
        if step % cfg.diag_every == 0 or step == cfg.steps:
            vrng = np.random.default_rng(val_rng_seed + 1)
            diag, warnings = diagnose(model, to_torch(buffer.sample(min(256, 4 * cfg.batch_size), cfg.k, cfg.model.frame_stack, vrng, valid=held_out), device))
            log(diag, step)
            for w in warnings:
                if rank == 0:
                    tqdm.write(f"step {step}: WARNING: {w}")
        if step % cfg.ckpt_every == 0:
            save_latest()
    bar.close()
    recalibrate_batchnorm(model, buffer, train_starts, cfg, device)  # the saved model's eval mode uses these
    last_val = validate(model, buffer, val_starts if len(val_starts) else train_starts, cfg, device, val_rng_seed)
    log(last_val, step)
    save_latest()
    if rank == 0:
        checkpoint.save(cfg.out / "model.safetensors", model.state_dict(),
                        {"kind": "world_model", "config": asdict(cfg.model), "step": step, "metrics": last_val,
                         "corpus": str(cfg.corpus), "train_config": json.loads(json.dumps(asdict(cfg), default=str))})
        if writer:
            writer.close()
    return last_val


@torch.no_grad()
def recalibrate_batchnorm(model: WorldModel, buffer: EpisodeBuffer, starts: np.ndarray, cfg: TrainConfig, device: torch.device,
                          batches: int = 16, seed: int = 777) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over `batches` training batches with
    the current weights.

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
    rng = np.random.default_rng(seed)
    for i in range(batches):
        batch = to_torch(buffer.sample(cfg.batch_size, cfg.k, cfg.model.frame_stack, rng, valid=starts), device)
        world_model_loss(model, batch, cfg.loss, torch.Generator(device=device).manual_seed(i))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was)


@torch.no_grad()
def validate(model: WorldModel, buffer: EpisodeBuffer, starts: np.ndarray, cfg: TrainConfig, device: torch.device, seed: int) -> dict:
    """Held-out losses on the same windows every time (a fixed generator), BatchNorm in eval mode."""
    was = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    sums: dict[str, float] = {}
    for i in range(cfg.val_batches):
        batch = to_torch(buffer.sample(cfg.batch_size, cfg.k, cfg.model.frame_stack, rng, valid=starts), device)
        _, m = world_model_loss(model, batch, cfg.loss, torch.Generator(device=device).manual_seed(i))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.val_batches
    model.train(was)
    return {f"val/{k}": v for k, v in sums.items()}


def load_world_model(path: Path, device: str | torch.device = "cpu") -> tuple[WorldModel, dict]:
    """A trained world model (eval mode) and its sidecar."""
    tensors, meta = checkpoint.load(path, kind="world_model")
    try:
        cfg = ModelConfig(**meta["config"])
    except TypeError as e:
        raise LemarioError(f"{path} has a model config this lemario cannot build ({e}): use a matching lemario version") from None
    model = WorldModel(cfg)
    checkpoint.load_state(model, tensors, Path(path))
    return model.to(device).eval(), meta


def train_main(cfg: TrainConfig) -> None:
    val = train(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"world model saved to {cfg.out / 'model.safetensors'}")
        for k, v in val.items():
            print(f"  {k:<22}{v:.4f}")


