"""Checkpoints: weights as safetensors plus a JSON sidecar (kind, config, step, metrics, git commit), both
written atomically. Never pickles: a checkpoint loads without running any code from it.

    NAME.safetensors   tensors (model, and for training checkpoints `optim/...` and RNG states)
    NAME.json          {"kind", "config", "step", "metrics", "git_commit", "lemario_version", ...}
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_bytes, write_json
from lemario.core.provenance import provenance


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write NAME.safetensors then NAME.json, each via a temporary file and a rename (the sidecar last: a
    checkpoint whose sidecar exists is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
    write_json(sidecar_path(path), {**provenance(), **meta})


def load_meta(path: Path, kind: str | None = None) -> dict:
    """A checkpoint's sidecar, without its tensors; a missing or damaged checkpoint, or one of another kind, is a
    clear error."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise LemarioError(
            f"no checkpoint at {path} (needs {path.name} and {side.name}): check the path or train one first"
        )
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LemarioError(f"cannot read {side} ({type(e).__name__}): the checkpoint is damaged, use another") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise LemarioError(f"{side} is not a lemario checkpoint sidecar (it names no kind): pass a lemario checkpoint")
    if kind is not None and meta["kind"] != kind:
        raise LemarioError(f"{path} is a {meta['kind']!r} checkpoint, expected {kind!r}: pass a {kind} checkpoint")
    return meta


def load(path: Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and sidecar of a checkpoint (`load_meta`'s checks first)."""
    meta = load_meta(path, kind)
    path = Path(path).with_suffix(".safetensors")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise LemarioError(
            f"cannot read {path} ({type(e).__name__}: {e}): the file is damaged, use another checkpoint"
        ) from None
    return tensors, meta


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict strictly; a shape or key mismatch names what differs."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unexpected[:3]}" if unexpected else "")
        if wrong:
            k = wrong[0]
            detail += f" shape of {k}: checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)}"
        raise LemarioError(f"{path} does not fit this model ({detail.strip()}): use the config it was trained with")
    module.load_state_dict(tensors)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as named tensors (PREFIX/<param id>/<name>); hyperparameters stay in code."""
    out = {}
    for pid, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{prefix}/{pid}/{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)
