"""Does a world model know what each action does at a given place? Real outcomes against predicted ones, from saved
states.

From states of an exploration archive (`lemario explore`: every cell keeps the emulator state of its cheapest known
way) whose x lies in a window, the real emulator plays a fixed bank of action sequences (running or walking, a
jump held one step or eight, walking on, standing) for `horizon` steps, and records whether Mario dies and how far
he gets. Each world model rolls the same sequences out from the state's frame stack (one real latent and the
action before it, as `lemario diagnose` does) and reads its reward head: the highest P(death) along the rollout
and the progress summed over it. Printed: per sequence the real death rate and progress beside each model's
mean P(death) and predicted progress, and per model two AUCs of its P(death) for the real deaths: over all
(state, sequence) pairs, and within states (the share of (dying, living) sequence pairs of one state that the model
orders right: the action-conditional question a planner or an imagined policy asks).

    .venv/bin/python benchmarks/action_outcomes.py M1.safetensors [M2 ...] --archives runs/c36-explore/archive \\
        runs/c39-explore-*/archive     # the top of the staircase before 1-1's third pit
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.core.files import read_json
from lemario.games.mario.actions import action_bytes, action_set
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.games.mario.ram import info_from_ram, level_index
from lemario.model.death import format_auc, roc_auc
from lemario.model.world_model import decode_reward, load_world_model
from lemario.play.archive import state_from_bytes


@dataclass(frozen=True)
class Args:
    models: tyro.conf.Positional[tuple[Path, ...]]
    """World-model checkpoints trained on the archives' frames."""
    archives: tuple[Path, ...] = (Path("runs/c36-explore/archive"),)
    """Exploration archive folders (cells.json and states/) of one level and frame settings."""
    x_from: int = 2400
    x_to: int = 2427
    """The window of x (default: the top of the staircase before 1-1's third pit, up to its edge)."""
    airborne: bool = False
    """Also states with Mario in the air (by default only those standing or running on the ground: a decision)."""
    horizon: int = 15
    max_states: int = 80
    """At most this many states, drawn with `seed` from those in the window."""
    seed: int = 0


def sequences(horizon: int) -> dict[str, list[tuple[str, ...]]]:
    """The bank: two steps of run-up (releasing A, so a jump can start), then the move, then its direction held."""
    run, walk = ("right", "B"), ("right",)

    def jump(go: tuple[str, ...], hold: int) -> list[tuple[str, ...]]:
        return [go] * 2 + [(*go, "A")] * hold + [go] * (horizon - 2 - hold)

    return {
        "run, jump held 8": jump(run, 8),
        "run, jump held 1": jump(run, 1),
        "walk, jump held 8": jump(walk, 8),
        "walk, jump held 1": jump(walk, 1),
        "walk on": [walk] * horizon,
        "stand": [()] * horizon,
    }


def indices(name: str, moves: list[tuple[str, ...]]) -> list[int]:
    """The action indices of the named set for these button tuples (in its own button order)."""
    table = {frozenset(b): i for i, b in enumerate(action_set(name))}
    return [table[frozenset(m)] for m in moves]


def real_outcomes(env: SuperMarioBros, state, seqs: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(S,) died within the sequence, (S,) x gained (up to the death), playing each from `state`."""
    died, gained = [], []
    for actions in seqs.values():
        _, info = env.reset(options={"state": state})
        x0, dead = info["x_pos"], False
        for a in actions:
            _, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                dead = bool(info["is_dying"])
                break
        died.append(dead)
        gained.append(info["x_pos"] - x0)
    return np.array(died), np.array(gained, float)


@torch.no_grad()
def predicted(model, stack: np.ndarray, level: int, prev: int, seqs: dict[str, list[int]]) -> tuple[np.ndarray, ...]:
    """(S,) highest P(death) along each sequence's rollout, (S,) its summed predicted progress."""
    n = len(seqs)
    obs = torch.from_numpy(np.repeat(stack[None], n, 0))  # (S, stack, H, W)
    z = model.encode(obs, torch.full((n,), level))  # (S, D)
    actions = torch.tensor(list(seqs.values()))  # (S, H)
    preds = model.rollout(z[:, None], actions, torch.full((n,), prev))  # (S, H, D)
    r = decode_reward(model.reward(preds, actions).float()).numpy()  # (S, H, 4)
    return r[:, :, 2].max(1), r[:, :, 0].sum(1)


def within_state_auc(p: np.ndarray, died: np.ndarray) -> tuple[float | None, int]:
    """Over states (rows) holding both outcomes: the share of (dying, living) pairs ordered right (ties half)."""
    right, pairs = 0.0, 0
    for ps, ds in zip(p, died):
        for a in ps[ds]:
            right += float(np.sum(a > ps[~ds]) + 0.5 * np.sum(a == ps[~ds]))
            pairs += int((~ds).sum())
    return (right / pairs if pairs else None), pairs


def main(args: Args) -> None:
    torch.set_num_threads(1)
    states, env_cfg = [], None
    for folder in args.archives:
        run = read_json(folder / "cells.json")
        if env_cfg not in (None, EnvConfig(**run["config"]["env"])):
            raise SystemExit(f"{folder}: another level or other frame settings than {args.archives[0]}")
        env_cfg = EnvConfig(**run["config"]["env"])
        for cell in sorted(run["cells"], key=lambda c: c["key"]):
            if not (cell["state_file"] and args.x_from <= cell["x"] < args.x_to):
                continue
            file, _, entry = cell["state_file"].partition(":")
            with np.load(folder / "states" / file) as z:
                state = state_from_bytes(z[entry].tobytes())
            if args.airborne or info_from_ram(state.ram)["on_ground"]:
                states.append(state)
    rng = np.random.default_rng(args.seed)
    states = [states[i] for i in sorted(rng.permutation(len(states))[: args.max_states])]
    bank = sequences(args.horizon)
    seqs = {name: indices(env_cfg.action_set, moves) for name, moves in bank.items()}
    byte_to_action = {b: i for i, b in enumerate(action_bytes(env_cfg.action_set))}
    models = [load_world_model(m, "cpu")[0].eval() for m in args.models]
    env = SuperMarioBros(env_cfg)
    died, gained, p_death, p_dx = [], [], [[] for _ in models], [[] for _ in models]
    world, stage = (int(v) for v in env_cfg.level.split("-"))
    for state in states:
        d, g = real_outcomes(env, state, seqs)
        died.append(d)
        gained.append(g)
        prev = byte_to_action.get(state.buttons[-1] if state.buttons else 0, 0)
        for i, model in enumerate(models):
            p, dx = predicted(model, state.stack, level_index(world, stage), prev, seqs)
            p_death[i].append(p)
            p_dx[i].append(dx)
    env.close()
    died, gained = np.array(died), np.array(gained)  # (N, S)
    p_death, p_dx = [np.array(p) for p in p_death], [np.array(d) for d in p_dx]  # each (N, S)
    where = ", ".join(str(a) for a in args.archives)
    print(f"{len(died)} states at x {args.x_from}-{args.x_to} of {where}, {args.horizon} steps each")
    head = "sequence".ljust(20) + "real: died, px".rjust(18)
    print(head + "".join(f" | model {i + 1}: P(death), px" for i in range(len(models))))
    for j, name in enumerate(seqs):
        row = f"{name:<20}{died[:, j].mean():>10.2f} {gained[:, j].mean():>7.0f}"
        row += "".join(f" | {p_death[i][:, j].mean():>17.2f} {p_dx[i][:, j].mean():>6.0f}" for i in range(len(models)))
        print(row)
    for i, path in enumerate(args.models):
        within, pairs = within_state_auc(p_death[i], died)
        pooled = roc_auc(p_death[i].ravel(), died.ravel())
        print(
            f"model {i + 1} ({path}): AUC of P(death) for the real deaths {format_auc(pooled)} over all pairs, "
            f"{format_auc(within)} within states ({pairs} pairs)"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
