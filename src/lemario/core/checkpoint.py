"""Checkpoints: weights as safetensors plus a JSON sidecar (kind, config, step, metrics, git commit), both
written atomically. Never pickles: a checkpoint loads without running any code from it.

    NAME.safetensors   tensors (model, and for training checkpoints `optim/...` and RNG states); its header
                       carries the sidecar as written, with a `write_id` both share
    NAME.json          {"kind", "config", "step", "metrics", "git_commit", "lemario_version", "write_id", ...}

Two files cannot be replaced in one atomic step: a kill between the two renames leaves new tensors beside the
previous sidecar (a training run resumed from them restarted at the old step and sampler state: session 39). The
tensors' own copy settles it: where the sidecar is missing or names another write, it is the one loaded. A sidecar
edited later (a fork renaming its world model) keeps its `write_id` and is read as edited.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_bytes, write_json
from lemario.core.provenance import provenance

HEADER_KEY = "lemario"
"""The safetensors header's metadata entry that holds the sidecar as written."""


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write NAME.safetensors (the sidecar in its header) then NAME.json, each via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**provenance(), **meta, "write_id": uuid.uuid4().hex}
    header = {HEADER_KEY: json.dumps(meta, default=str)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=header))
    write_json(sidecar_path(path), meta)


def _header_meta(path: Path) -> dict | None:
    """The sidecar as the tensors' header holds it (None for checkpoints written before session 39, or a file
    `load` will call damaged)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(HEADER_KEY)
        return json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - a truncated or foreign file
        return None


def load_meta(path: Path, kind: str | None = None) -> dict:
    """A checkpoint's sidecar (the tensors' header copy where the sidecar is missing or from another write), without
    its tensors; a missing or damaged checkpoint, or one of another kind, is a clear error."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    side = sidecar_path(path)
    header = _header_meta(path) if path.is_file() else None
    if not path.is_file() or not (side.is_file() or header):
        raise LemarioError(
            f"no checkpoint at {path} (needs {path.name} and {side.name}): check the path or train one first"
        )
    meta = None
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            if header is None:
                raise LemarioError(
                    f"cannot read {side} ({type(e).__name__}): the checkpoint is damaged, use another"
                ) from None
    if header is not None and (not isinstance(meta, dict) or meta.get("write_id") != header.get("write_id")):
        meta = header  # a kill between the two writes: the sidecar is missing or the previous checkpoint's
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
