"""Planning players of the push game; the turn cost they minimize is `lemario.control.push_cost`'s.

`LatentPlanner` is the world-model player: from the last frames it sees (and the thrusts between them) it encodes
a context, rolls every candidate turn through the predictor in one batch per step, reads the board from the last
predicted latent with the state head, and scores that. No simulator on its side. It keeps, for every CEM
iteration, each sample's predicted T path and cost (the "dream field" a person can watch). Given several world
models (seeds of one recipe) it reads the board as the mean of their state heads' readings, each model encoding
and predicting in its own latent space: an ensemble of readings, whose errors average where the seeds' differ.

`SimulatorPlanner` is the upper bound the world-model player is measured against: the same CEM over a turn's
thrusts and the same cost, each candidate played out in the true pymunk simulator from the true state.

Both plan at the start of each turn and play the plan open-loop, or with `replan` plan again before each later
step of the turn, over the steps left, from what they see then (receding horizon: a model's errors over the turn
are corrected by the real frames each step). Either can start its search from a scripted rule's turn (`warm`):
the rule plays the turn out in the planner's own model of the game (the simulator; for the world-model player, the
predictor, the rule reading the board from each predicted latent with the state head), and those thrusts are
CEM's first mean, scored as one of its samples. Without it the search starts from no thrust, or when replanning
from the rest of the turn's plan. With a warm start, `guard` keeps the rule's turn wherever the search's first
candidates (drawn around it) leave the T more than `guard` units apart (rms of where each leaves the T's centre): a
world model ranks the candidates of a turn that moves the T at about chance (`lemario push fidelity`'s
`rho_contact`), and its pick there loses to the rule's turn; measured in matches, the guard changes next to nothing
at the narrow search's width and does not rescue a wider one (docs/RESULTS.md, session 64). With a warm start,
`front` searches only where the own disc is within `front` units of its pushing point behind the T (`to_front`, on
the board the planner sees as it plans) and plays the rule's turn unsearched farther off: a world model's search
loses to passive in its approach, where the turns it picks brush the T back toward the own goal; kept away from
the approach it plays as its rule against passive and as the search against the pushers (docs/RESULTS.md, sessions
67-68). `costs` is the cost a planner searches, for analyses of it
(`lemario.play.push_fidelity`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lemario.control.gaussian_cem import CEMIteration, CEMPlan, GaussianCEMConfig, gaussian_cem
from lemario.control.push_cost import COSTS, PUSH_REACH, to_front, turn_cost
from lemario.core.errors import LemarioError
from lemario.games.push.board import (
    DISC_SLICE,
    GOALS,
    PLAYERS,
    T_POS,
    Board,
    clip_thrust,
    head_positions,
    head_state,
)
from lemario.games.push.env import Seen
from lemario.games.push.opponents import Rule, scripted
from lemario.games.push.render import render
from lemario.model.world_model import WorldModel

MODEL_COSTS = (*COSTS, "latent")
"""A world-model player also takes 'latent': LeWorldModel's goal-embedding cost, the squared distance of the last
predicted latent to the latent of a goal picture (the T in front of its own goal, its own disc behind the T,
the other disc where the state head reads it now: all from pixels)."""
GOAL_COSTS = ("latent", "state")
"""Goal reaching (a goal frame): LeWorldModel's squared distance of the last predicted latent to the goal frame's
latent, or the distance between what the state head reads from the two (amber's disc, the T's centre and angle)."""
GOAL_T_OFFSET = 70.0
"""The `latent` cost's goal picture puts the T this far in front of its goal point (clear of the wall)."""
WARM_RULES = ("chase_t", "adversarial")
"""Scripted rules a planner can start its search from."""


def warm_rule(name: str) -> Rule | None:
    """The rule a planner's search starts from ('' for none)."""
    if name and name not in WARM_RULES:
        raise LemarioError(f"unknown warm start {name!r}: use one of {', '.join(WARM_RULES)}, or none")
    return scripted(name) if name else None


def keep_check(guard: float, front: float, warm: str) -> None:
    """A guard or a front keeps the warm rule's turn: refused without one, or given in negative units."""
    for flag, units, what in (("--guard", guard, "a spread of the T"), ("--front", front, "a distance")):
        if units < 0 or (units > 0 and not warm):
            raise LemarioError(
                f"{flag} {units}: give {what} in units (>= 0; 0: off) and a --warm rule, whose turn it keeps"
            )


def spread(points: torch.Tensor) -> float:
    """(N, 2) points -> their root mean square distance from their mean."""
    points = points.double()
    return float((points - points.mean(0)).square().sum(-1).mean().sqrt())


def project_thrust(a: torch.Tensor) -> torch.Tensor:
    """(..., 2) thrusts into the unit disc."""
    return a / a.norm(dim=-1, keepdim=True).clamp_min(1.0)


class TurnPlanner:
    """What both planning players share: a player (what it sees -> thrust) that plans at the start of each turn
    (`plan_turn`) and plays the plan (with `replan`, planning the turn's rest again before each step), keeping the
    turn's first plan, its samples' T paths and the turn's planning time."""

    def __init__(
        self,
        steps_per_turn: int,
        cfg: GaussianCEMConfig | None,
        cost: str,
        seed: int,
        warm: str,
        replan: bool,
        guard: float = 0.0,
        front: float = 0.0,
    ):
        cfg = cfg or GaussianCEMConfig()
        cfg.validate()
        keep_check(guard, front, warm)
        self.warm, self.guard, self.front = warm_rule(warm), guard, front
        self.guarded = [0, 0]
        """Plans the rule's turn was kept in (by the guard, or away from the front), plans made with a warm start."""
        self.cfg, self.horizon, self.cost, self.replan = cfg, steps_per_turn, cost, replan
        self.gen = torch.Generator().manual_seed(seed)
        self.queue: list[np.ndarray] = []
        self.last: CEMPlan | None = None
        self.t_paths: list[torch.Tensor] = []
        """Per CEM iteration of the last plan: (N, H, 2) each sample's T centre after each step (predicted or
        simulated)."""
        self.ends: torch.Tensor | None = None
        """(N, 3, 2) where the last cost evaluated left each sample's amber disc, cyan disc and T (predicted or
        simulated)."""
        self.seconds = 0.0
        """Planning time of the last plan (played as a player: of the turn so far, replans included)."""

    def __call__(self, seen: Seen) -> np.ndarray:
        if seen.step_in_turn == 0 or not self.queue:
            self.last = self.plan_turn(seen, self.horizon, None)
            self.queue = list(self.last.actions.numpy())
        elif self.replan:
            shown, spent = self.t_paths, self.seconds  # a person is shown the turn's first plan
            rest = torch.as_tensor(np.array(self.queue))  # (h, 2)
            self.queue = list(self.plan_turn(seen, len(self.queue), rest).actions.numpy())
            self.t_paths, self.seconds = shown, spent + self.seconds
        return self.queue.pop(0).astype(np.float32)

    def plan_turn(self, seen: Seen, horizon: int, rest: torch.Tensor | None) -> CEMPlan:
        """A plan of `horizon` thrusts; `rest` (horizon, 2): the search's start when there is no warm rule."""
        raise NotImplementedError

    def at_front(self, disc: np.ndarray, t: np.ndarray, me: int) -> bool:
        """Whether the own disc at `disc` (2,), the T at `t` (2,), is within `front` of its pushing point."""
        return float(to_front(torch.as_tensor(disc), torch.as_tensor(t), torch.as_tensor(GOALS[me]))) <= self.front

    def search(self, cost, horizon: int, mean: torch.Tensor | None, t0: float, searching: bool = True) -> CEMPlan:
        """CEM over `horizon` thrusts from `mean` (None: no thrust), timed from `t0`; `cost`: (N, H, 2) -> (N,).
        Not `searching` (away from the front): the warm `mean` is the plan, scored alone."""
        if searching:
            plan = gaussian_cem(cost, horizon, 2, self.cfg, self.gen, project_thrust, mean)
        else:
            only = project_thrust(mean)[None]  # (1, H, 2)
            costs = cost(only).float()
            plan = CEMPlan(only[0], float(costs[0]), [CEMIteration(only, costs)])
        if self.warm:
            first = plan.history[0]  # its sample 0 is the rule's turn
            keep = not searching or (self.guard > 0 and spread(self.t_paths[0][:, -1]) > self.guard)
            self.guarded = [self.guarded[0] + keep, self.guarded[1] + 1]
            if keep:
                plan = CEMPlan(first.actions[0], float(first.costs[0]), plan.history)
        self.seconds = time.perf_counter() - t0
        return plan


class LatentPlanner(TurnPlanner):
    """A player (what it sees -> thrust) that plans each turn with CEM inside a push world model."""

    def __init__(
        self,
        model: WorldModel | Sequence[WorldModel],
        steps_per_turn: int = 5,
        cfg: GaussianCEMConfig | None = None,
        cost: str = "approach",
        seed: int = 0,
        warm: str = "",
        replan: bool = False,
        guard: float = 0.0,
        front: float = 0.0,
    ):
        super().__init__(steps_per_turn, cfg, cost, seed, warm, replan, guard, front)
        if cost not in (*MODEL_COSTS, *GOAL_COSTS):
            raise LemarioError(f"unknown push cost {cost!r}: use one of {', '.join(MODEL_COSTS)}")
        self.models = [m.eval() for m in ([model] if isinstance(model, WorldModel) else model)]
        """The world models whose state heads' readings the player averages (one: a plain model player)."""
        for m in self.models:
            if not (m.cfg.continuous_actions and m.cfg.state_head):
                raise LemarioError("the latent planner needs a push world model (thrust actions and a state head)")
        if len({m.cfg.image_size for m in self.models}) > 1:
            raise LemarioError("an ensemble's world models read frames of different sizes: give models of one recipe")
        if len(self.models) > 1 and cost not in COSTS:
            raise LemarioError(
                f"the {cost!r} cost compares one model's latents: an ensemble plays a board cost ({', '.join(COSTS)})"
            )
        self.model = self.models[0]
        self.goal: torch.Tensor | None = None
        """(D,) the goal frame's latent, for goal reaching."""
        self.shifts = [torch.zeros(1, m.cfg.state_head) for m in self.models]
        """Per model, (c, 8): what it reads off each frame it sees minus its state head's reading of the frame's
        latent (`read`; set by `costs`, none before)."""

    def plan_turn(self, seen: Seen, horizon: int, rest: torch.Tensor | None) -> CEMPlan:
        return self.plan(seen, horizon, rest)

    @torch.no_grad()
    def match_goal(self, z: torch.Tensor, me: int) -> torch.Tensor:
        """(D,) the latent of the picture of `me` winning, from the board the state head reads in latent z (D,)."""
        read = self.model.decode_state(z).numpy()
        pos = head_positions(read)  # (3, 2) amber, cyan, the T
        goal = GOALS[me].astype(np.float64)
        inward = np.array([1.0 if me == 0 else -1.0, 0.0])  # from the goal toward the board's middle
        state = np.zeros(14, np.float32)
        t = goal + inward * GOAL_T_OFFSET
        state[8:10], state[10] = t, np.arctan2(read[7], read[6])
        own, other = DISC_SLICE[me], DISC_SLICE[1 - me]
        state[own] = t + inward * PUSH_REACH
        state[other] = pos[1 - me]
        frame = render(state, self.model.cfg.image_size, subpixel=self.model.cfg.subpixel)
        return self.model.encode(torch.as_tensor(frame)[None, None])[0]

    @torch.no_grad()
    def set_goal(self, frame: np.ndarray) -> None:
        """Reach the board a (H, W, 3) frame shows (costs 'latent' or 'state')."""
        if self.cost not in GOAL_COSTS:
            raise LemarioError(f"goal reaching takes a goal cost ({', '.join(GOAL_COSTS)}), not {self.cost!r}")
        self.goal = self.model.encode(torch.as_tensor(frame)[None, None])[0]

    def goal_cost(self, last: torch.Tensor) -> torch.Tensor:
        """(N, D) last predicted latents -> (N,) distance to the goal."""
        if self.cost == "latent":
            return (last - self.goal).pow(2).sum(-1)
        read, want = self.model.decode_state(last), self.model.decode_state(self.goal)  # (N, 8), (8,)
        keep = [0, 1, 4, 5, 6, 7]  # amber's disc, the T's centre and angle (cyan idles)
        return (read[:, keep] - want[keep]).norm(dim=-1)

    @torch.no_grad()
    def plan(self, seen: Seen, horizon: int | None = None, rest: torch.Tensor | None = None) -> CEMPlan:
        """CEM over the next `horizon` thrusts (default: a turn's) from the warm rule's, else from `rest`."""
        t0, horizon = time.perf_counter(), horizon or self.horizon
        cost, contexts, past = self.costs(seen)
        if not self.warm:
            return self.search(cost, horizon, rest, t0)
        searching = True
        if self.front:
            pos = head_positions(self.read([c[0] for c in contexts])[-1].numpy())  # (3, 2) the board it sees now
            searching = self.at_front(pos[seen.me], pos[2], seen.me)
        return self.search(cost, horizon, self.rule_turn(contexts, past, seen.me, horizon), t0, searching)

    @torch.no_grad()
    def costs(self, seen: Seen) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The cost of candidate thrusts (N, H, 2) -> (N,) as the models predict them from what the player sees (each
        sample's predicted T path kept in `t_paths`), and what they predict from: each model's context (1, c, D) of
        real latents and the thrusts between them (1, c-1, 4)."""
        cfg = self.model.cfg
        me, frames = seen.me, torch.as_tensor(seen.frames_at(cfg.image_size, cfg.subpixel))[:, None]
        seen_read = [m.encode_read(frames) for m in self.models]  # M x ((c, D), (c, 8))
        contexts = [z[None] for z, _ in seen_read]  # M x (1, c, D)
        self.shifts = [read - m.decode_state(z) for m, (z, read) in zip(self.models, seen_read)]  # M x (c, 8)
        past = torch.as_tensor(seen.thrusts)[None]  # (1, c-1, 4)
        goal = torch.as_tensor(GOALS[me])
        picture = self.match_goal(contexts[0][0, -1], me) if self.cost == "latent" and self.goal is None else None
        self.t_paths = []

        @torch.no_grad()  # called after `costs` returns, outside its no_grad
        def cost(actions: torch.Tensor) -> torch.Tensor:  # (N, H, 2) -> (N,)
            n, horizon = actions.shape[:2]
            thrusts = torch.zeros(n, horizon, 4)
            thrusts[..., 2 * me : 2 * me + 2] = actions  # the idle disc gets none
            full = torch.cat([past.expand(n, -1, -1), thrusts], dim=1)  # (N, c-1+H, 4)
            preds = [m.rollout(c.expand(n, -1, -1), full, torch.zeros(n, 4)) for m, c in zip(self.models, contexts)]
            pos = head_positions(self.read(preds, newest=True))  # (N, H, 3, 2)
            self.t_paths.append(pos[:, :, 2])
            self.ends = pos[:, -1]
            if self.goal is not None:
                return self.goal_cost(preds[0][:, -1])
            if self.cost == "latent":
                return (preds[0][:, -1] - picture).pow(2).sum(-1)
            return turn_cost(pos[:, -1, me], pos[:, -1, 2], goal, self.cost)

        return cost, contexts, past

    def read(self, latents: list[torch.Tensor], newest: bool = False) -> torch.Tensor:
        """Each model's latents (..., D), in its order -> (..., 8) the mean of their readings: the state head's,
        shifted by what the model read off the frames it sees (`costs`' shifts: zero unless a token reader reads
        them) where the state head reads their latents. The latents are those of the frames seen, (c, D), or
        (`newest`) predicted after them, each shifted by the newest frame's."""
        return torch.stack(
            [m.decode_state(z) + (s[-1] if newest else s) for m, z, s in zip(self.models, latents, self.shifts)]
        ).mean(0)

    @torch.no_grad()
    def rule_turn(self, contexts: list[torch.Tensor], past: torch.Tensor, me: int, horizon: int) -> torch.Tensor:
        """(H, 2) the warm rule's thrusts over `horizon` steps played in the world models: at each step the rule reads
        the board from the newest latents with the state heads (velocities from the latents before), and its thrust
        moves the predictors on. contexts: each model's (1, c, D) real latents; past (1, c-1, 4) the thrusts between
        them."""
        reads = list(self.read([c[0] for c in contexts]).numpy())  # c x (8,)
        thrusts = torch.zeros(1, horizon, 4)
        for i in range(horizon):
            state = head_state(reads[-1], reads[-2] if len(reads) > 1 else None)
            thrusts[0, i, 2 * me : 2 * me + 2] = torch.as_tensor(clip_thrust(self.warm(state, me)))
            full = torch.cat([past, thrusts[:, : i + 1]], dim=1)  # (1, c-1+i+1, 4)
            newest = [m.rollout(c, full, torch.zeros(1, 4))[:, -1] for m, c in zip(self.models, contexts)]  # M x (1, D)
            reads.append(self.read(newest, newest=True)[0].numpy())
        return thrusts[0, :, 2 * me : 2 * me + 2]


class SimulatorPlanner(TurnPlanner):
    """A player (what it sees -> thrust) that plans each turn with CEM in the true simulator."""

    def __init__(
        self,
        steps_per_turn: int = 5,
        cfg: GaussianCEMConfig | None = None,
        cost: str = "approach",
        seed: int = 0,
        warm: str = "",
        replan: bool = False,
        guard: float = 0.0,
        front: float = 0.0,
    ):
        super().__init__(steps_per_turn, cfg, cost, seed, warm, replan, guard, front)
        turn_cost(torch.zeros(2), torch.ones(2), torch.zeros(2), cost)  # an unknown cost fails here, not mid-match
        self.board = Board()

    def plan_turn(self, seen: Seen, horizon: int, rest: torch.Tensor | None) -> CEMPlan:
        return self.plan(seen.state, seen.me, horizon, rest)

    def plan(self, state: np.ndarray, me: int, horizon: int | None = None, rest: torch.Tensor | None = None) -> CEMPlan:
        """CEM over the next `horizon` thrusts (default: a turn's) from the warm rule's, else from `rest`."""
        t0, horizon = time.perf_counter(), horizon or self.horizon
        cost = self.costs(state, me)
        if not self.warm:
            return self.search(cost, horizon, rest, t0)
        searching = not self.front or self.at_front(state[DISC_SLICE[me]], state[T_POS], me)
        return self.search(cost, horizon, self.rule_turn(state, me, horizon), t0, searching)

    def costs(self, state: np.ndarray, me: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The cost of candidate thrusts (N, H, 2) -> (N,) played out in the simulator from `state` (each sample's
        T path kept in `t_paths`)."""
        goal = torch.as_tensor(GOALS[me])
        self.t_paths = []

        def cost(actions: torch.Tensor) -> torch.Tensor:  # (N, H, 2) -> (N,)
            paths = []
            for seq in actions.numpy():
                self.board.set_state(state)
                path = []
                for a in seq:
                    thrusts = np.zeros((len(PLAYERS), 2))
                    thrusts[me] = clip_thrust(a)
                    self.board.step(thrusts)
                    path.append(self.board.state())
                paths.append(path)
            states = torch.as_tensor(np.array(paths))  # (N, H, 14)
            self.t_paths.append(states[..., T_POS])
            self.ends = torch.stack(
                [states[:, -1, DISC_SLICE[0]], states[:, -1, DISC_SLICE[1]], states[:, -1, T_POS]], 1
            )
            return turn_cost(states[:, -1, DISC_SLICE[me]], states[:, -1, T_POS], goal, self.cost)

        return cost

    def rule_turn(self, state: np.ndarray, me: int, horizon: int) -> torch.Tensor:
        """(H, 2) the warm rule's thrusts over `horizon` steps played in the simulator from `state`."""
        self.board.set_state(state)
        out = []
        for _ in range(horizon):
            a = clip_thrust(self.warm(self.board.state(), me))
            thrusts = np.zeros((len(PLAYERS), 2))
            thrusts[me] = a
            self.board.step(thrusts)
            out.append(a)
        return torch.as_tensor(np.array(out), dtype=torch.float32)
