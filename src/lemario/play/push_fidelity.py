"""How well push world models rank a turn's candidate thrusts: `lemario push fidelity MODEL [MODEL ...]`.

A latent planner is only as good as the order its cost puts candidate turns in; a search on a cost that orders
them wrongly picks turns the model scores well and the board does not. At the turn starts of scripted matches
(chase_t against adversarial, from both sides; match seeds `EVAL_SEED_BASE + seed + i`, the tuning range by
default), candidate turns are drawn around the rule's turn (chase_t's, played in the simulator from the true
board) with a Gaussian of each given width, as CEM's first iteration draws them (projected into the thrust disc;
the rule's turn itself is candidate 0). Every candidate is scored in the true simulator and by each model, from the
frames a player sees, with the planners' own cost. Per width and scorer, over the positions:
- `rho`: rank correlation (Spearman) of the scorer's costs with the true ones;
- `regret`: the true cost of the scorer's pick minus the best true cost among the candidates;
- `gain`: the rule's true cost minus the true cost of the scorer's pick (> 0: the pick really beats the rule's
  turn; the simulator's own pick gives the most there is to gain), beside `believed`, the gain the scorer saw;
- `beats_rule`: the share of positions where the pick's true cost is below the rule's;
- `rho_contact`, `rho_free` (and `contact`, the share): `rho` over the positions where some candidates move the T
  (its true end positions spread over more than `T_MOVES` units, root mean square) and over the others;
- `disc_r2`, `t_r2` (each model): how much of the true change across candidates of where the turn leaves the own
  disc and the T (each candidate's end position minus the rule's candidate's) the model's predicted change explains,
  pooled over the positions (1 - residual / total sums of squares; the simulator's is 1). A cost ranks no better
  than its terms are foreseen: the disc's is its response to thrust, the T's the contact;
- `t_spread` (each model): how far apart (units rms) the model foresees the candidates leaving the T, what a player
  can tell contact by (`--guard` keeps the rule's turn where it is large);
- `response` (the simulator and each model): how far the own disc's end position moves per unit of each step's
  thrust (`response`: least squares over the position's candidates, linear in their thrusts), averaged over the
  positions without contact (none: left out). There the true response is the same at every position (the disc's
  physics), falling from the turn's first thrust to its last (measured at width 0.3: 22 / 19 / 15 / 10 / 4 units;
  less at 0.1); a model that foresees the last thrusts' effect too small cannot tell candidates apart by them.
Each model's cost also splits into the two ways it errs, each scored as a scorer of its own (`split`): `model i:
changes`, the true end positions of the rule's candidate moved by the model's predicted change of each candidate
(only the foresight errs), and `model i: start`, the model's end positions of the rule's candidate moved by each
candidate's true change (only the reading of where the rule's turn leaves the board errs).
With several models (seeds of one recipe), also their ensemble: the mean of their costs plus `penalty` times their
standard deviation (a pick the models disagree on costs more).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.control.push_cost import COSTS, turn_cost
from lemario.control.push_players import LatentPlanner, SimulatorPlanner, project_thrust, spread
from lemario.core.errors import LemarioError
from lemario.core.files import write_json
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json
from lemario.games.push.board import GOALS
from lemario.games.push.env import PushGame, Seen
from lemario.games.push.opponents import adversarial, chase_t
from lemario.model.world_model import load_world_model
from lemario.play.push_match import EVAL_SEED_BASE
from lemario.play.stats import bootstrap_ci

ORACLE = "simulator"
T_MOVES = 1.0
"""Board units (an eighth of a 64-px frame's pixel) the T's end positions must spread over across a position's
candidates for the position to count as one of contact (`rho_contact`)."""


@dataclass(frozen=True)
class FidelityConfig:
    models: tyro.conf.Positional[tuple[Path, ...]]
    """Push world models (model.safetensors); several: also their ensemble."""
    positions: int = 100
    """Turn starts scored (10 per match)."""
    samples: int = 96
    """Candidate turns per position and width, the rule's own among them."""
    widths: tuple[float, ...] = (0.1, 0.3, 0.7)
    """Standard deviations of the candidates' thrusts around the rule's (CEM's --cem.init-std)."""
    penalties: tuple[float, ...] = (0.0, 1.0)
    """The ensemble's cost: the models' mean cost plus this many standard deviations of it (several models)."""
    cost: str = "approach"
    seed: int = 900_000
    """Offset of the match seeds (EVAL_SEED_BASE + seed + i): by default the tuning range, not the evaluation's."""
    out: Path | None = None
    """Folder for fidelity.json (per-position rows and the summary); none: print only."""

    def validate(self) -> None:
        if not self.models:
            raise LemarioError("pass at least one push world model (model.safetensors)")
        for m in self.models:
            if not Path(m).is_file():
                raise LemarioError(f"no world model at {m}: pass push model.safetensors files")
        if self.positions < 1 or self.samples < 2 or not self.widths or min(self.widths) <= 0:
            raise LemarioError("--positions >= 1, --samples >= 2 and positive --widths, please")
        if self.cost not in COSTS:
            raise LemarioError(f"unknown push cost {self.cost!r}: use one of {', '.join(COSTS)}")


def turn_starts(n: int, seed: int) -> list[Seen]:
    """What the acting player sees at `n` turn starts of chase_t (amber) against adversarial (cyan) matches."""
    out, i = [], 0
    while len(out) < n:
        env = PushGame()
        env.reset(seed=EVAL_SEED_BASE + seed + i)
        done, i = False, i + 1
        while not done and len(out) < n:
            seen = env.seen()
            if seen.step_in_turn == 0:
                out.append(seen)
            rule = chase_t if seen.me == 0 else adversarial
            done = env.step(rule(seen.state, seen.me))[2]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two (N,) arrays (continuous values: ties do not occur)."""
    ra, rb = a.argsort().argsort().astype(np.float64), b.argsort().argsort().astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def judge(scores: np.ndarray, true: np.ndarray) -> dict:
    """How a scorer's (N,) costs of candidates (candidate 0 the rule's turn) pick among them, by their true costs."""
    pick = int(scores.argmin())
    return {
        "rho": spearman(scores, true),
        "regret": float(true[pick] - true.min()),
        "gain": float(true[0] - true[pick]),
        "believed": float(scores[0] - scores[pick]),
        "beats_rule": float(true[pick] < true[0]),
    }


@torch.no_grad()
def score_position(
    seen: Seen, sim: SimulatorPlanner, models: list[LatentPlanner], cfg: FidelityConfig, width: float, gen
) -> dict:
    """Every scorer's judgement of one position's candidates at one width (`sim`: warm-started from chase_t)."""
    rule = sim.rule_turn(seen.state, seen.me, sim.horizon)  # (H, 2)
    noise = torch.randn(cfg.samples, *rule.shape, generator=gen)
    noise[0] = 0.0
    candidates = project_thrust(rule + width * noise)  # (N, H, 2)
    true = sim.costs(seen.state, seen.me)(candidates).numpy()
    true_ends, per_model, parts = sim.ends, [], {}
    foreseen = {ORACLE: {"response": response(candidates, true_ends[:, seen.me])}}
    goal = torch.as_tensor(GOALS[seen.me])
    for i, m in enumerate(models):
        per_model.append(m.costs(seen)[0](candidates).numpy())
        own = {"response": response(candidates, m.ends[:, seen.me])}
        foreseen[f"model {i}"] = {**changes(m.ends, true_ends, seen.me), **own}
        for part, ends in split(m.ends, true_ends).items():
            parts[f"model {i}: {part}"] = turn_cost(ends[:, seen.me], ends[:, 2], goal, cfg.cost).numpy()
    per_model = np.stack(per_model)  # (M, N)
    scorers = {ORACLE: true, **{f"model {i}": c for i, c in enumerate(per_model)}, **parts}
    if len(models) > 1:
        for k in cfg.penalties:
            scorers[f"ensemble +{k:g} sd"] = per_model.mean(0) + k * per_model.std(0)
    contact = float(spread(true_ends[:, 2]) > T_MOVES)
    return {
        name: {**judge(scores, true), "contact": contact, **foreseen.get(name, {})} for name, scores in scorers.items()
    }


def split(ends: torch.Tensor, true_ends: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 3, 2) predicted and true end positions (candidate 0 the rule's turn) -> the end positions with one of the
    prediction's two errors left in: `changes`, the predicted change of each candidate from the true rule candidate's
    ends; `start`, the true change from the predicted rule candidate's ends."""
    ends, true_ends = ends.double(), true_ends.double()
    return {"changes": true_ends[:1] + ends - ends[:1], "start": ends[:1] + true_ends - true_ends[:1]}


def changes(ends: torch.Tensor, true_ends: torch.Tensor, me: int) -> dict:
    """Sums of squares of the own disc's and the T's change across candidates, from (N, 3, 2) predicted and true end
    positions (candidate 0 the rule's turn): `*_res` the prediction's error, `*_tot` the true change's spread; and
    `t_spread`, the T's predicted end positions' spread (units rms), what a player can tell contact by."""
    out = {}
    for name, k in (("disc", me), ("t", 2)):
        pred, true = ends[:, k] - ends[0, k], true_ends[:, k] - true_ends[0, k]  # (N, 2)
        out[f"{name}_res"] = float((pred - true).square().sum())
        out[f"{name}_tot"] = float((true - true.mean(0)).square().sum())
    out["t_spread"] = spread(ends[:, 2])
    return out


def response(candidates: torch.Tensor, disc: torch.Tensor) -> list[float]:
    """(N, H, 2) candidate thrusts and (N, 2) where each leaves the own disc -> (H,) how far the end position moves
    per unit of each step's thrust along the same axis (units; the mean of the x-on-x and y-on-y coefficients of a
    least-squares fit, over the candidates, linear in their thrusts)."""
    x = candidates.reshape(len(candidates), -1).double()  # (N, 2H): step 0 x, y, step 1 x, y, ...
    design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), x - x.mean(0)], dim=1)  # (N, 1 + 2H)
    ridge = 1e-6 * torch.eye(design.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(design.T @ design + ridge, design.T @ disc.double())[1:]  # (2H, 2): thrust -> position
    w = w.reshape(-1, 2, 2)  # (H, thrust axis, position axis)
    return ((w[:, 0, 0] + w[:, 1, 1]) / 2).tolist()


def fidelity_main(cfg: FidelityConfig) -> None:
    cfg.validate()
    models = [LatentPlanner(load_world_model(m)[0], cost=cfg.cost) for m in cfg.models]
    sim = SimulatorPlanner(cost=cfg.cost, warm="chase_t")
    starts = turn_starts(cfg.positions, cfg.seed)
    rows, summary = [], {}
    for width in cfg.widths:
        gen = torch.Generator().manual_seed(cfg.seed)
        judged = [score_position(seen, sim, models, cfg, width, gen) for seen in starts]
        rows += [{"width": width, "position": i, **j} for i, j in enumerate(judged)]
        for name in judged[0]:
            summary[f"{width:g} {name}"] = aggregate([j[name] for j in judged])
            print(line(width, name, summary[f"{width:g} {name}"]))
    if cfg.out is not None:
        models_named = {f"model {i}": str(m) for i, m in enumerate(cfg.models)}
        write_json(
            cfg.out / "fidelity.json",
            {"config": as_json(cfg), **provenance(), "models": models_named, "summary": summary, "rows": rows},
        )


def aggregate(judged: list[dict]) -> dict:
    """Means over positions, with a bootstrap 95% CI of the gain, and the pooled R² of the foreseen changes."""
    sums = {k: float(np.sum([j[k] for j in judged])) for k in judged[0] if k.endswith(("_res", "_tot"))}
    out = {k: float(np.mean([j[k] for j in judged])) for k in judged[0] if k not in sums and k != "response"}
    free = [j["response"] for j in judged if "response" in j and j.get("contact") == 0.0]
    if free:  # the own disc's physics: where the candidates touch nothing
        out["response"] = np.mean(free, axis=0).tolist()
    out["gain_ci95"] = list(bootstrap_ci([j["gain"] for j in judged]))
    for name, where in (("contact", 1.0), ("free", 0.0)):
        rhos = [j["rho"] for j in judged if j.get("contact") == where]
        out[f"rho_{name}"] = float(np.mean(rhos)) if rhos else float("nan")
    for name in ("disc", "t"):
        if f"{name}_res" in sums:
            out[f"{name}_r2"] = 1 - sums[f"{name}_res"] / max(sums[f"{name}_tot"], 1e-12)
    return out


def line(width: float, name: str, s: dict) -> str:
    lo, hi = s["gain_ci95"]
    foreseen = f"  R² of the changes: own disc {s['disc_r2']:+.2f}, T {s['t_r2']:+.2f}" if "disc_r2" in s else ""
    if "response" in s:
        foreseen += f"  the disc's response to each thrust {' / '.join(f'{r:.1f}' for r in s['response'])}"
    return (
        f"width {width:<4g} {name:<19} rho {s['rho']:+.2f} (contact {s['rho_contact']:+.2f}, free "
        f"{s['rho_free']:+.2f})  regret {s['regret']:6.1f}  gain {s['gain']:+6.1f} "
        f"[{lo:+.1f}, {hi:+.1f}] (believed {s['believed']:+.1f})  beats the rule in {s['beats_rule']:.0%}{foreseen}"
    )
