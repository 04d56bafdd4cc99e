"""What makes two invocations of a command the same run, and a clear refusal when a folder holds another one.

A run folder stores its config's *key*: the resolved config without its bookkeeping fields (where it writes, how
long it runs, how it shows progress). Re-running a command on the folder compares keys. A key written by an older
lemario lacks the options added since; they are compared at their defaults, which by convention are the old
behaviour (a command whose new option's default is new behaviour passes the old value as the comparison default,
as `push data` does for `persist`), and fields that moved into a nested config are compared there, so old runs
still resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.core.provenance import provenance


def as_json(cfg) -> dict:
    """A (nested) dataclass config as plain JSON values (paths as strings)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def run_key(cfg, bookkeeping: tuple[str, ...]) -> dict:
    """The config as JSON without its top-level `bookkeeping` fields."""
    return {k: v for k, v in as_json(cfg).items() if k not in bookkeeping}


def with_defaults(stored: dict, defaults: dict) -> dict:
    """`stored` in today's shape: a field that has since moved into a nested config (one nested config has it, the
    top level no longer does) is moved there, and the keys it lacks are filled from `defaults`, at every level."""
    stored = dict(stored)
    nested = {k: v for k, v in defaults.items() if isinstance(v, dict)}
    for k in [k for k in stored if k not in defaults]:
        homes = [name for name, sub in nested.items() if k in sub]
        if len(homes) == 1:
            stored[homes[0]] = {**stored.get(homes[0], {}), k: stored.pop(k)}
    merged = {**defaults}
    for k, v in stored.items():
        merged[k] = with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return merged


def differences(stored: dict, key: dict, prefix: str = "") -> list[str]:
    """'field: stored -> new' for every field that differs (dotted names for nested configs)."""
    out = []
    for k in sorted(set(stored) | set(key)):
        a, b = stored.get(k, "<absent>"), key.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a} -> {b}")
    return out


def check_same_run(stored: dict, key: dict, defaults: dict, folder: Path, what: str) -> None:
    """Refuse, in one line naming the fields and both values, a folder whose stored key is not `key`."""
    diff = differences(with_defaults(stored, defaults), key)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise LemarioError(
            f"{folder} holds a {what} with another config ({shown}): use a new --out folder, "
            f"or the run's own settings (its config.json)"
        )


def open_study(out: Path, key: dict, defaults: dict, what: str, config: dict, **extra) -> None:
    """OUT/config.json for a new study (its key, `config`, `extra` records, when and from which commit), or the
    refusal of a folder that holds another study."""
    if (out / "config.json").exists():
        check_same_run(read_json(out / "config.json")["run_key"], key, defaults, out, what)
        return
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(out / "config.json", {"run_key": key, "config": config, **extra, "created": created, **provenance()})
