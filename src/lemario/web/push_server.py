"""`lemario push serve`: the push game in the browser, a person against a latent-planning world model.

One FastAPI app serves the page (`lemario/web/static/`, plain HTML and JS, no build step) and a WebSocket at
`/ws`. Each connection holds its own match; several tabs play at once, and planning runs in a worker thread so it
never blocks other connections. JSON messages:

client -> server
    {"type": "new_match", "seed": int | null, "side": "amber" | "cyan"}   side: the person's
    {"type": "human_turn", "targets": [[x, y], ...]}                     1-3 waypoints in board units (0-512)
    {"type": "model_turn"}
server -> client
    {"type": "state", "match": id, "side", "opponent", "seed", "frame", "state", "turn", "actor", "distances"}
    {"type": "plan", "samples": [{"iter", "cost", "t_path": [[x, y], ...]}], "best_cost", "seconds"}
    {"type": "step_frame", "frame", "state", "step", "actor"}
    {"type": "turn_result", "turn", "actor", "distances", "next": "amber" | "cyan" | null}
    {"type": "match_over", "winner": "amber" | "cyan" | "draw", "distances"}
    {"type": "error", "message"}                                         the connection and the server go on

Frames are 512 px PNGs as base64. A message that is not JSON, too large (> `MAX_MESSAGE` bytes), of an unknown
type, malformed (waypoints off the board, too many) or out of turn gets an error message and changes nothing.
The server binds 127.0.0.1 unless told otherwise (`--host`).
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations (WebSocket) as objects.
import asyncio
import base64
import itertools
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import (
    MODEL_COSTS,
    LatentPlanner,
    SimulatorPlanner,
    TurnPlanner,
    keep_check,
    warm_rule,
)
from lemario.core.errors import LemarioError
from lemario.games.push.board import PLAYERS, SIZE, goal_distances
from lemario.games.push.env import PushConfig, PushGame
from lemario.games.push.opponents import SCRIPTED, Waypoints, scripted
from lemario.games.push.render import render
from lemario.model.world_model import load_world_model

STATIC = Path(__file__).parent / "static"
MAX_MESSAGE = 16_384
MAX_WAYPOINTS = 3
OPPONENTS = ("model", "oracle", *SCRIPTED)
SHIPPED = Path("pretrained/push/world_model.safetensors")
SERVE_CEM = GaussianCEMConfig(samples=32, iterations=2, init_std=0.1)
"""The served planner's search: narrow, around the warm rule's turn, replanned every step, so a person sees a dream
field of 64 plans a step where it searches; with the front it searches only near its pushing point
(`ServeConfig.front`): 0.16-0.19 s a turn median, 0.26-0.29 s p90, on 2 threads of a 2-core AMD host (searching every
plan: 0.285 / 0.312 s; benchmarks/push_plan.py, docs/RESULTS.md session 69). The wide default search
(`GaussianCEMConfig`: 96 x 6 from a std of 0.7) loses to the rule it starts from (docs/RESULTS.md, sessions 28-30)."""
SERVE_FRONT = 30.0
"""Away from its pushing point the search's approach brushed the T back against players that leave it be (session
67); searching only within 30 units of it (chosen on the tuning seeds, session 68), the shipped model's recipe wins
1.00 / 1.00 / 0.59 / 0.50 against random / passive / chase_t / adversarial on the evaluation seeds, three model seeds
pooled, where its plain search wins 0.97 / 0.97 / 0.61 / 0.53 (docs/RESULTS.md session 69)."""


@dataclass(frozen=True)
class ServeConfig:
    model: Path | None = SHIPPED
    """A push world model (`lemario train --preset push`); by default the one shipped in the repository
    (scripts/ship_push_model.py), read from the directory the server starts in."""
    opponent: str = "model"
    """Who the person plays: 'model' (CEM in the world model), 'oracle' (CEM in the true simulator) or a scripted
    player."""
    host: str = "127.0.0.1"
    port: int = 8800
    cost: str = "approach"
    warm: str = "adversarial"
    """Start the planner's search from a scripted rule's turn ('chase_t' or 'adversarial'); empty: from no thrust.
    Read every step (`replan`) with the narrow search of the cem options, adversarial's rule played the strongest
    on the tuning seeds (docs/RESULTS.md, sessions 58-59)."""
    replan: bool = True
    """The planner plans the turn's rest again before each of its steps (receding horizon), from the frame it sees
    then; the dream field shows the turn's first plan, the planning time is the whole turn's."""
    front: float = SERVE_FRONT
    """Search only where the planner's own disc is within this many units of its pushing point behind the T (on the
    board it reads as it plans) and play the warm rule's turn unsearched farther off; 0: search every plan."""
    cem: GaussianCEMConfig = SERVE_CEM
    game: PushConfig = field(default_factory=PushConfig)

    def validate(self) -> None:
        if self.opponent not in OPPONENTS:
            raise LemarioError(f"unknown opponent {self.opponent!r}: use one of {', '.join(OPPONENTS)}")
        if self.opponent == "model" and (self.model is None or not Path(self.model).is_file()):
            raise LemarioError(
                f"the model opponent needs --model PATH to a push world model ({self.model} is not one): run from "
                "the repository's root for the shipped one, train one with `lemario train --preset push`, or play "
                "--opponent oracle"
            )
        if self.cost not in MODEL_COSTS or (self.cost == "latent" and self.opponent != "model"):
            raise LemarioError(
                f"unknown push cost {self.cost!r} for the {self.opponent} opponent: use one of "
                f"{', '.join(MODEL_COSTS)} ('latent' with the model only)"
            )
        warm_rule(self.warm)
        keep_check(0.0, self.front, self.warm)
        self.cem.validate()
        self.game.validate()


def png(state: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(render(state, int(SIZE)), cv2.COLOR_RGB2BGR))
    return base64.b64encode(data.tobytes()).decode()


class ProtocolError(Exception):
    """A client message the match cannot take: answered with an error message."""


class Match:
    """One person's match against the configured opponent."""

    _ids = itertools.count(1)

    def __init__(self, cfg: "ServeConfig", model, seed: int, side: int):
        self.id, self.cfg, self.side = next(self._ids), cfg, side
        self.env = PushGame(cfg.game)
        self.seed = seed
        self.env.reset(seed=seed)
        plans = (cfg.game.steps_per_turn, cfg.cem, cfg.cost, seed, cfg.warm, cfg.replan)
        if cfg.opponent == "model":
            self.opponent = LatentPlanner(model, *plans, front=cfg.front)
        elif cfg.opponent == "oracle":
            self.opponent = SimulatorPlanner(*plans, front=cfg.front)
        else:
            rule = scripted(cfg.opponent, seed)
            self.opponent = lambda seen: rule(seen.state, seen.me)

    @property
    def over(self) -> bool:
        return self.env.steps >= self.cfg.game.match_steps

    def snapshot(self) -> dict:
        state = self.env.board.state()
        return {
            "type": "state",
            "match": self.id,
            "side": PLAYERS[self.side],
            "opponent": self.cfg.opponent,
            "seed": self.seed,
            "frame": png(state),
            "state": state.tolist(),
            "turn": self.env.steps // self.cfg.game.steps_per_turn,
            "actor": PLAYERS[self.env.actor],
            "distances": goal_distances(state).tolist(),
        }

    def check_turn(self, human: bool) -> None:
        if self.over:
            raise ProtocolError("the match is over: start a new one")
        if (self.env.actor == self.side) != human:
            whose = "your" if self.env.actor == self.side else "the model's"
            raise ProtocolError(f"out of turn: it is {whose} turn ({PLAYERS[self.env.actor]})")

    def play_turn(self, player) -> list[dict]:
        """The acting player's whole turn: a step_frame per step, then the turn result (and match over)."""
        out, actor, turn = [], self.env.actor, self.env.steps // self.cfg.game.steps_per_turn
        for _ in range(self.cfg.game.steps_per_turn):
            _, _, _, _, info = self.env.step(player(self.env.seen()))
            state = info["state"]
            out.append(
                {"type": "step_frame", "frame": png(state), "state": state.tolist(), "step": self.env.steps,
                 "actor": PLAYERS[actor]}
            )  # fmt: skip
        distances = goal_distances(self.env.board.state()).tolist()
        nxt = None if self.over else PLAYERS[self.env.actor]
        out.append({"type": "turn_result", "turn": turn, "actor": PLAYERS[actor], "distances": distances, "next": nxt})
        if self.over:
            winner = info["winner"]
            out.append(
                {"type": "match_over", "winner": "draw" if winner < 0 else PLAYERS[winner], "distances": distances}
            )
        return out

    def human_turn(self, targets) -> list[dict]:
        self.check_turn(human=True)
        points = parse_targets(targets)
        rule = Waypoints(points)
        return self.play_turn(lambda seen: rule(seen.state, seen.me))

    def model_turn(self) -> list[dict]:
        self.check_turn(human=False)
        planner = self.opponent
        if not isinstance(planner, TurnPlanner):
            return self.play_turn(planner)
        kept = planner.guarded[0]
        out = self.play_turn(planner)
        plans = self.cfg.game.steps_per_turn if self.cfg.replan else 1
        out.insert(0, plan_message(planner, plans - (planner.guarded[0] - kept), plans))
        return out


def parse_targets(targets) -> list[list[float]]:
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_WAYPOINTS:
        raise ProtocolError(f"targets must be a list of 1 to {MAX_WAYPOINTS} [x, y] waypoints")
    points = []
    for p in targets:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)):
            raise ProtocolError("each waypoint must be [x, y] in board units")
        if not all(0 <= v <= SIZE for v in p):
            raise ProtocolError(f"waypoint {p} is off the board (0 to {SIZE:.0f})")
        points.append([float(v) for v in p])
    return points


def plan_message(planner: TurnPlanner, searched: int, plans: int) -> dict:
    """The turn's first plan's samples per CEM iteration: cost and the T path it expected (the world model's
    prediction, or for the oracle the simulator's); of the turn's `plans`, how many were `searched` (the rest kept
    the rule's turn away from the front)."""
    samples = []
    for i, it in enumerate(planner.last.history):
        paths = planner.t_paths[i].round(decimals=1).tolist()
        samples += [{"iter": i, "cost": round(float(c), 2), "t_path": p} for c, p in zip(it.costs.tolist(), paths)]
    return {
        "type": "plan", "samples": samples, "best_cost": planner.last.cost, "seconds": planner.seconds,
        "searched": searched, "plans": plans,
    }  # fmt: skip


def create_app(cfg: ServeConfig):
    """The FastAPI app (imported here: the rest of lemario does not need the web stack)."""
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    cfg.validate()
    model = load_world_model(cfg.model)[0] if cfg.opponent == "model" else None
    app = FastAPI(title="lemario push")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    seeds = itertools.count(1)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "push.html")

    @app.websocket("/ws")
    async def play(ws: WebSocket):
        await ws.accept()
        match: Match | None = None
        try:
            while True:
                raw = await ws.receive_text()
                try:
                    msg = parse_message(raw)
                    if msg["type"] == "new_match":
                        seed, side = msg.get("seed"), msg.get("side", "amber")
                        valid_seed = seed is None or (type(seed) is int and 0 <= seed < 2**32)
                        if side not in PLAYERS or not valid_seed:
                            raise ProtocolError("new_match takes a side ('amber' or 'cyan') and a seed in [0, 2^32)")
                        match = Match(cfg, model, next(seeds) if seed is None else seed, PLAYERS.index(side))
                        replies = [match.snapshot()]
                    elif match is None:
                        raise ProtocolError("no match yet: send new_match first")
                    elif msg["type"] == "human_turn":
                        replies = await asyncio.to_thread(match.human_turn, msg.get("targets"))
                    else:
                        replies = await asyncio.to_thread(match.model_turn)
                except ProtocolError as e:
                    replies = [{"type": "error", "message": str(e)}]
                except Exception as e:  # noqa: BLE001 - a bug in one match must not end the connection
                    traceback.print_exc()
                    replies = [{"type": "error", "message": f"internal error ({type(e).__name__}): start a new match"}]
                    match = None
                for reply in replies:
                    await ws.send_text(json.dumps(reply))
        except WebSocketDisconnect:
            return

    return app


def parse_message(raw: str) -> dict:
    if len(raw) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(raw)} bytes is over the {MAX_MESSAGE}-byte limit")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ProtocolError("message is not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("new_match", "human_turn", "model_turn"):
        raise ProtocolError("unknown message: type must be new_match, human_turn or model_turn")
    return msg


def serve_main(cfg: ServeConfig) -> None:
    import uvicorn

    app = create_app(cfg)
    print(f"lemario push: open http://{cfg.host}:{cfg.port}/ (opponent: {cfg.opponent})", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
