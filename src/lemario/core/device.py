"""Where tensors live and in what arithmetic: one resolver for every command's `--device`, the CPU's bf16 check,
the move of a numpy batch onto the device, the process's peak memory, and the line a benchmark names its machine by."""

from __future__ import annotations

import functools
import os
import platform
import resource
from pathlib import Path

import numpy as np
import torch

from lemario.core.errors import LemarioError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto': this process's CUDA device when there is one (LOCAL_RANK under torchrun), else the CPU;
    'cpu'; 'cuda' (an error when no GPU is visible); or an explicit 'cuda:N'."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.split(":")[0] not in DEVICES[1:]:
        raise LemarioError(f"unknown device {name!r}: use one of {', '.join(DEVICES)} (or cuda:N)")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LemarioError(f"--device {name}: no CUDA device is visible to this process; use --device cpu or auto")
    return torch.device(name if ":" in name else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (CPU for one without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (Linux's /proc/cpuinfo) of bf16 matmuls in hardware, where oneDNN's bf16 matmuls beat fp32 several times:
AMX tiles (Intel Sapphire Rapids and later, ~5x) or AVX-512 BF16 instructions (AMD Zen 4, Intel Cooper Lake; a latent
plan 2.2x on an AMD EPYC, docs/RESULTS.md session 66)."""


def bf16_in_flags(flags: str) -> bool:
    """Whether a /proc/cpuinfo `flags` line names a hardware bf16 matmul (`BF16_FLAGS`)."""
    return not set(BF16_FLAGS).isdisjoint(flags.split())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bf16 matmuls in hardware (`BF16_FLAGS`), read once from /proc/cpuinfo."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return False
    return bf16_in_flags(flags)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform reports."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def machine() -> str:
    """What a timing runs on, in one line: the CPU, its cores, torch and its threads, native bf16, and the cores'
    1-minute load average when it is called (at a benchmark's start), flagged when other work holds the cores."""
    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    busy = " BUSY: other work holds the cores, so these are not idle-machine timings" if load > cores / 2 else ""
    return (
        f"{cpu_name()}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), native bf16 "
        f"{cpu_has_native_bf16()}; load {load:.2f}{busy}"
    )


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (AMX or AVX-512 BF16 on a CPU, bf16 support on a GPU)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()


PRECISIONS = ("auto", "fp32", "bf16")


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a precision setting: 'fp32', 'bf16', or 'auto' (bf16 where `device` computes it
    natively: CPUs with AMX or AVX-512 BF16, CUDA; else fp32)."""
    if precision not in PRECISIONS:
        raise LemarioError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A sampled numpy batch as tensors on `device`."""
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, in GiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
