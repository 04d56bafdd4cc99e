"""Ship a push-game world model into the repository, with where it came from and how its matches went, so
`lemario push serve` and `lemario push match` play it right after setup.

    .venv/bin/python scripts/ship_push_model.py runs/push-wm/model.safetensors --matches runs/push-match \
        --to pretrained/push

OUT/world_model.safetensors + .json   the model and its sidecar (training config, git commit), copied bit for bit
OUT/provenance.json                   the source file, its commit, the key of the corpus it was trained on (its
                                      `lemario push data` options), the match command's config, this model's
                                      win rates per opponent and every one of its matches (seed, side, outcome:
                                      any of them can be replayed)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import tyro

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.model.world_model import load_world_model
from lemario.play.push_match import MODEL


@dataclass(frozen=True)
class Args:
    model: tyro.conf.Positional[Path]
    """The push world model to ship (a `lemario train --preset push` model.safetensors)."""
    matches: Path
    """A `lemario push match` folder (its matches.json) in which this model played."""
    to: Path = Path("pretrained/push")


def ship(args: Args) -> dict:
    meta = load_world_model(args.model)[1]  # it loads, or this is a clear error
    corpus = Path(meta["train_config"]["corpus"]) / "config.json"
    if not corpus.is_file():
        raise LemarioError(f"{args.model} was trained on {corpus.parent}, which has no config.json: ship from where "
                           "it was trained (the corpus's options are part of the recipe)")  # fmt: skip
    record = read_json(args.matches / "matches.json")
    spec = f"{MODEL}{args.model}"
    rows = [r for r in record["rows"] if r["player"] == spec]
    if not rows:
        raise LemarioError(f"{args.matches} has no match of {spec}: pass the match folder of this model")
    summaries = {opp: per[spec] for opp, per in record["per_player"].items()}
    args.to.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model, args.to / "world_model.safetensors")
    shutil.copyfile(checkpoint.sidecar_path(args.model), args.to / "world_model.json")
    provenance = {
        "world_model": str(args.model),
        "world_model_commit": meta.get("git_commit"),
        "corpus_key": read_json(corpus)["key"],
        "matches": str(args.matches),
        "match_config": record["config"],
        "summaries": summaries,
        "rows": rows,
    }
    write_json(args.to / "provenance.json", provenance)
    return provenance


if __name__ == "__main__":
    p = ship(tyro.cli(Args))
    print(json.dumps({"shipped": p["world_model"], "win_rates": {o: s["win_rate"] for o, s in p["summaries"].items()}}))
