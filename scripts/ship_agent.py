"""Ship an agent into the repository: a policy and the world model it was trained in, with where both came from
and what they scored, so `lemario eval` / `lemario render` on it work right after setup.

    .venv/bin/python scripts/ship_agent.py runs/pi/policy.safetensors --eval runs/eval --to pretrained/1-1

OUT/policy.safetensors + .json   the policy; its sidecar names the world model beside it
OUT/world_model.safetensors + .json
OUT/provenance.json              the source files, their git commits, the evaluation's aggregate and episodes for
                                 this policy (each with its evaluation seed: any of them can be replayed)
The weights are copied bit for bit (no cast): the shipped agent plays exactly as evaluated.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import tyro

from lemario.control.imagination import load_policy, policy_world_model
from lemario.core import checkpoint, runlog
from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json


@dataclass(frozen=True)
class Args:
    policy: tyro.conf.Positional[Path]
    """The policy checkpoint to ship."""
    eval: Path
    """A `lemario eval` folder that evaluated this policy (its summary.json)."""
    to: Path = Path("pretrained/1-1")


def ship(args: Args) -> dict:
    load_policy(args.policy)  # it loads with its world model, or this is a clear error
    meta = checkpoint.load_meta(args.policy, kind="policy")
    wm = policy_world_model(args.policy, meta)
    spec = f"policy:{args.policy}"
    summary = read_json(args.eval / "summary.json")
    if spec not in summary["per_agent"]:
        raise LemarioError(f"{args.eval} did not evaluate {spec}: pass the eval folder of this policy")
    args.to.mkdir(parents=True, exist_ok=True)
    for src, name in ((args.policy, "policy"), (wm, "world_model")):
        shutil.copyfile(src, args.to / f"{name}.safetensors")
    shutil.copyfile(checkpoint.sidecar_path(wm), args.to / "world_model.json")
    write_json(args.to / "policy.json", {**meta, "world_model": "world_model.safetensors"})
    episodes = [
        {k: r[k] for k in ("episode", "eval_seed", "max_x", "steps", "end", "flag_get")}
        for r in runlog.read_rows(args.eval / "episodes.jsonl")
        if r.get("agent") == spec
    ]
    provenance = {
        "policy": str(args.policy),
        "policy_commit": meta.get("git_commit"),
        "world_model": str(wm),
        "world_model_commit": checkpoint.load_meta(wm, kind="world_model").get("git_commit"),
        "evaluation": str(args.eval),
        "eval_config": summary.get("config"),
        "score": summary["per_agent"][spec],
        "episodes": episodes,
    }
    write_json(args.to / "provenance.json", provenance)
    return provenance


if __name__ == "__main__":
    p = ship(tyro.cli(Args))
    print(json.dumps({"shipped": p["policy"], "mean_max_x": p["score"]["mean_max_x"]}))
