"""Goal reaching in the push game, the LeWorldModel paper's evaluation: `lemario push goal MODEL`.

A task is a start and the board `offset` steps later in the same episode: from a random start, amber plays
regime turns (`lemario.games.push.regimes`) while cyan idles, and the board after `offset` steps is the goal.
From the start, the planner gets the goal's frame only and `budget` steps; a task succeeds when amber's disc and
the T's centre are within 20 units of the goal's and the T's angle within pi/9 (the paper's Push-T criterion).

Baselines on the same tasks: `still` (no thrust: the tasks the start already solves, or that idling solves) and
`random` (a uniform thrust every step). Task seeds are `GOAL_SEED_BASE + seed + i`, disjoint from everything
trained or tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import GOAL_COSTS, LatentPlanner
from lemario.core.errors import LemarioError
from lemario.core.files import write_json
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json
from lemario.games.push.board import Board, random_start
from lemario.games.push.env import PushConfig, PushGame
from lemario.games.push.opponents import random_player
from lemario.games.push.regimes import Turn, draw_regime
from lemario.games.push.render import render
from lemario.model.world_model import load_world_model
from lemario.play.stats import bootstrap_ci

GOAL_SEED_BASE = 30_000_000
PLAYERS = ("model", "still", "random")


@dataclass(frozen=True)
class GoalConfig:
    model: tyro.conf.Positional[Path]
    """A push world model (model.safetensors)."""
    episodes: int = 50
    offset: int = 25
    """The goal is the board this many steps after the start."""
    budget: int = 50
    """Steps the planner gets."""
    cost: str = "latent"
    """'latent' (distance to the goal frame's latent) or 'state' (what the state head reads from both)."""
    steps_per_plan: int = 5
    """Planning horizon, and steps played before re-planning."""
    cem: GaussianCEMConfig = field(default_factory=GaussianCEMConfig)
    seed: int = 0
    out: Path | None = None
    """Folder for goal.json (per-task rows and the success rates); none: print only."""

    def validate(self) -> None:
        if not Path(self.model).is_file():
            raise LemarioError(f"no world model at {self.model}: pass a push model.safetensors")
        if self.cost not in GOAL_COSTS:
            raise LemarioError(f"unknown goal cost {self.cost!r}: use one of {', '.join(GOAL_COSTS)}")
        if min(self.episodes, self.offset, self.budget, self.steps_per_plan) < 1:
            raise LemarioError("--episodes, --offset, --budget and --steps-per-plan must be at least 1")
        self.cem.validate()


def goal_task(seed: int, offset: int, steps_per_turn: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(start, goal) board states: amber plays regime turns for `offset` steps from a random start."""
    rng = np.random.default_rng(seed)
    start = random_start(rng)
    board = Board()
    board.set_state(start)
    for step in range(offset):
        if step % steps_per_turn == 0:
            turn = Turn(draw_regime(rng), board.state(), 0, rng)
        board.step(np.stack([turn(board.state()), np.zeros(2)]))
    return start, board.state()


def attempt(player, start: np.ndarray, goal: np.ndarray, cfg: GoalConfig) -> dict:
    """One task: success, the steps it took, the final distances to the goal."""
    game = PushConfig(mode="goal", max_steps=cfg.budget, steps_per_turn=cfg.steps_per_plan)
    env = PushGame(game)
    env.reset(options={"state": start, "goal": goal})
    if isinstance(player, LatentPlanner):
        player.set_goal(render(goal, player.model.cfg.image_size, subpixel=player.model.cfg.subpixel))
    done = truncated = False
    while not (done or truncated):
        _, _, done, truncated, info = env.step(player(env.seen()))
    state = info["state"]
    return {
        "success": bool(info["success"]),
        "steps": env.steps,
        "disc_error": float(np.linalg.norm(state[0:2] - goal[0:2])),
        "t_error": float(np.linalg.norm(state[8:10] - goal[8:10])),
    }


def goal_main(cfg: GoalConfig) -> None:
    cfg.validate()
    model, _ = load_world_model(cfg.model)
    rows = []
    for i in range(cfg.episodes):
        seed = GOAL_SEED_BASE + cfg.seed + i
        start, goal = goal_task(seed, cfg.offset)
        rule = random_player(seed)
        players = {
            "model": LatentPlanner(model, cfg.steps_per_plan, cfg.cem, cfg.cost, seed),
            "still": lambda seen: np.zeros(2, np.float32),
            "random": lambda seen, rule=rule: rule(seen.state, seen.me),
        }
        for name, player in players.items():
            rows.append({"task": i, "seed": seed, "player": name, **attempt(player, start, goal, cfg)})
    summary = {}
    for name in PLAYERS:
        wins = np.array([r["success"] for r in rows if r["player"] == name], np.float64)
        lo, hi = bootstrap_ci(wins)
        summary[name] = {"success_rate": float(wins.mean()), "ci95_low": lo, "ci95_high": hi, "tasks": len(wins)}
        print(f"{name:>8}: success {wins.mean():.2f} [{lo:.2f}, {hi:.2f}] over {len(wins)} tasks")
    if cfg.out is not None:
        write_json(cfg.out / "goal.json", {"config": as_json(cfg), **provenance(), "summary": summary, "rows": rows})
