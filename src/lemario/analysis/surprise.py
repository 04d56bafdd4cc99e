"""Surprise, or violation of expectation (LeWorldModel): does the world model react to broken physics, and less to a
change of colours?

Surprise at step t is the model's one-step prediction error in latent space, the mean over dimensions of
(pred(z_{<=t-1}, a_{t-1}) - z_t)^2, the prediction made from real latents (the predictor's history of them).

Each episode is played three times from the same seed with the same actions (`branches`):
- `none`: as played;
- `physical`: at step t0 the game state jumps (Mario moved 48 px forward by a RAM write; the push game's T moved
  80 units), then play goes on from there;
- `cosmetic`: from step t0 colours change while the game's state (its RAM, the board) stays exactly as in `none`:
  Mario's every colour (red and blue swapped: the sky turns orange); the push game's T (white to red; swapping
  red and blue there would swap the amber and cyan discs, the players' identities, which is no cosmetic change).
Mario's episodes are played by the right-biased random policy (the corpus's behaviour), the push game's by the
data generator's regimes (`lemario.play.push_data`), on seeds of their own (SURPRISE_SEED_BASE) never trained on.

Per perturbation kind, each episode gives the mean surprise over the `window` steps from t0 minus the same in its
`none` branch; the paired sign-flip permutation test asks whether that difference is above zero.
`lemario analyze surprise MODEL --game mario|push` writes RUN/analysis/surprise.json and surprise.png (surprise
over time, mean +- standard error, per branch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from lemario.control.agents import ScriptedAgent
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import write_json
from lemario.core.plots import figure, save_png
from lemario.core.runconfig import as_json
from lemario.games.mario import frames as mario_frames
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.games.mario.ram import X_PAGE, X_SCREEN
from lemario.games.push.board import T_POS
from lemario.games.push.env import PushConfig, PushGame
from lemario.games.push.regimes import Turn, draw_regime
from lemario.games.push.render import render
from lemario.model.world_model import WorldModel, load_world_model
from lemario.play.stats import paired_permutation_p

KINDS = ("none", "physical", "cosmetic")
SURPRISE_SEED_BASE = 40_000_000
MARIO_TELEPORT_PX = 48
PUSH_TELEPORT_UNITS = 80.0
RED_T = (220, 60, 60)


def recolour(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> the same picture with red and blue swapped: every colour changes, no shape or position
    (Mario's cosmetic change)."""
    return np.ascontiguousarray(rgb[..., ::-1])


class RecolourableMario(SuperMarioBros):
    """The env whose observations can be recoloured (`recoloured = True`) without touching the emulator."""

    recoloured = False

    def _process(self, prev: np.ndarray | None, last: np.ndarray) -> np.ndarray:
        if not self.recoloured:
            return super()._process(prev, last)
        cfg = self.config
        prev, last = (None if s is None else recolour(mario_frames.canonical_rgb(s, cfg.backend)) for s in (prev, last))
        # already canonical: "retro" is the backend whose screens need no palette lookup
        return mario_frames.process(prev, last, "retro", cfg.grayscale, cfg.resize, cfg.crop_top, cfg.pool)


def teleport_mario(env: SuperMarioBros, dx: int = MARIO_TELEPORT_PX) -> None:
    """Move Mario `dx` px along the level by writing his position to the emulator's RAM."""
    ram = env.emu.ram
    x = int(ram[X_PAGE]) * 256 + int(ram[X_SCREEN]) + dx
    env.emu.write(X_PAGE, x // 256)
    env.emu.write(X_SCREEN, x % 256)


def mario_branches(env: RecolourableMario, seed: int, t0: int, steps: int) -> dict[str, dict] | None:
    """The three branches of one episode: per kind, obs (steps+1, S, H, W) uint8, actions (steps,) and the RAM
    each frame shows (steps+1, 2048); None when Mario's life ends before `steps` in any branch."""
    agent = ScriptedAgent("biased", env.config)
    obs, info = env.reset(seed=seed)
    agent.reset(seed)
    seen, rams, actions = [obs], [env.ram.copy()], []
    for t in range(steps):
        if t == t0:
            saved = env.save_state()
        a = agent.act(obs, info)
        obs, _, term, trunc, info = env.step(a)
        seen.append(obs)
        rams.append(env.ram.copy())
        actions.append(a)
        if (term or trunc) and t < steps - 1:
            return None
    out = {"none": {"obs": np.stack(seen), "actions": np.array(actions), "ram": np.stack(rams)}}
    for kind in KINDS[1:]:
        env.reset(options={"state": saved})
        if kind == "physical":
            teleport_mario(env)
        env.recoloured = kind == "cosmetic"
        branch, branch_ram = seen[: t0 + 1], rams[: t0 + 1]
        try:
            for t in range(t0, steps):
                obs, _, term, trunc, _ = env.step(actions[t])
                branch.append(obs)
                branch_ram.append(env.ram.copy())
                if (term or trunc) and t < steps - 1:
                    return None
        finally:
            env.recoloured = False
        out[kind] = {"obs": np.stack(branch), "actions": np.array(actions), "ram": np.stack(branch_ram)}
    return out


def push_branches(game: PushConfig, seed: int, t0: int, steps: int) -> dict[str, dict]:
    """The three branches of one push episode played by regime turns: per kind, obs (steps+1, H, W, 3), actions
    (steps, 4) (both discs' thrusts, as the model takes them) and the board's state (steps+1, 14)."""
    rng = np.random.default_rng(seed)
    env = PushGame(game)
    _, info = env.reset(seed=int(rng.integers(2**31)))
    states = [info["state"]]
    for t in range(steps):
        if t == t0:
            saved = env.board.state()
        if info["step_in_turn"] == 0:
            turn = Turn(draw_regime(rng), info["state"], info["actor"], rng)
        _, _, _, _, info = env.step(turn(info["state"]))
        states.append(info["state"])
    frames, thrusts, states = np.stack(env.frames), np.stack(env.thrusts), np.stack(states)
    recoloured = np.stack(
        [*frames[: t0 + 1], *(render(x, game.obs_size, RED_T, game.subpixel) for x in states[t0 + 1 :])]
    )
    out = {
        "none": {"obs": frames, "actions": thrusts, "state": states},
        "cosmetic": {"obs": recoloured, "actions": thrusts, "state": states},
    }
    moved = saved.copy()
    moved[T_POS] = _teleported(saved[T_POS], rng)
    env.board.set_state(moved)
    branch, branch_states = list(frames[: t0 + 1]), list(states[: t0 + 1])
    for t in range(t0, steps):
        env.board.step(thrusts[t].reshape(2, 2))
        branch_states.append(env.board.state())
        branch.append(render(branch_states[-1], game.obs_size, subpixel=game.subpixel))
    out["physical"] = {"obs": np.stack(branch), "actions": thrusts, "state": np.stack(branch_states)}
    return out


def _teleported(pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The T's centre moved PUSH_TELEPORT_UNITS in a random direction that keeps it on the board (one toward the
    middle always does)."""
    while True:
        angle = rng.uniform(0, 2 * np.pi)
        new = pos + PUSH_TELEPORT_UNITS * np.array([np.cos(angle), np.sin(angle)])
        if np.all((new > 90) & (new < 512 - 90)):
            return new.astype(np.float32)


@torch.no_grad()
def surprise(model: WorldModel, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(T+1, *frame) observations and the (T[, A]) actions between them -> (T+1,) surprise per step (step 0,
    with nothing to predict it from, is NaN)."""
    if obs.ndim == model.frame_dims:  # single frames (the push game): stacks of one
        obs = obs[:, None]
    emb = model.encode(torch.as_tensor(obs))[None]  # (1, T+1, D)
    acts = torch.as_tensor(actions)[None]
    prev = torch.zeros_like(acts[:, 0])
    pred = model.teacher_forced(emb, acts, prev)  # (1, T, D): pred[:, t] is latent t+1 from the real ones
    err = (pred - emb[:, 1:]).pow(2).mean(-1)[0].numpy()
    return np.concatenate([[np.nan], err])


@dataclass(frozen=True)
class SurpriseConfig:
    model: tyro.conf.Positional[Path]
    """World-model checkpoint (model.safetensors) of the game played."""
    game: Literal["mario", "push"] = "mario"
    episodes: int = 60
    """Episodes kept (Mario's that end before `steps` are replaced by further seeds)."""
    t0: int = 30
    """Step at which the perturbation happens (the first changed frame is t0 + 1)."""
    window: int = 3
    """Steps from t0 + 1 whose mean surprise each episode contributes to the paired test."""
    after: int = 8
    """Steps played after t0."""
    seed: int = 0
    """Offset of the episode seeds (SURPRISE_SEED_BASE + seed + i)."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    push: PushConfig = field(default_factory=PushConfig)
    """The push game's episodes (rendered at the model's frame size, whatever `obs_size` says)."""
    out: Path | None = None
    """Folder of surprise.json and surprise.png (default: the model's run folder /analysis)."""

    def validate(self) -> None:
        if self.episodes < 2 or self.t0 < 4 or not 1 <= self.window <= self.after:
            raise LemarioError("need --episodes >= 2, --t0 >= 4 and 1 <= --window <= --after")
        if self.game == "push" and self.t0 + self.after > self.push.match_steps:
            raise LemarioError(f"--t0 + --after must fit a push match ({self.push.match_steps} steps)")


def run_surprise(cfg: SurpriseConfig) -> dict:
    cfg.validate()
    t_start = time.perf_counter()
    model, _ = load_world_model(cfg.model)
    if (cfg.game == "push") != model.cfg.continuous_actions:
        raise LemarioError(f"{cfg.model} is not a {cfg.game} world model: pass --game for its game")
    steps = cfg.t0 + cfg.after
    env = RecolourableMario(cfg.env) if cfg.game == "mario" else None
    curves: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    seeds, tried = [], 0
    try:
        while len(seeds) < cfg.episodes:
            seed = SURPRISE_SEED_BASE + cfg.seed + tried
            tried += 1
            if tried > 20 * cfg.episodes:
                raise LemarioError(f"fewer than {cfg.episodes} of {tried} episodes lasted {steps} steps: lower --t0")
            if env is not None:
                got = mario_branches(env, seed, cfg.t0, steps)
            else:
                got = push_branches(replace(cfg.push, obs_size=model.cfg.image_size), seed, cfg.t0, steps)
            if got is None:
                continue
            seeds.append(seed)
            for kind, branch in got.items():
                curves[kind].append(surprise(model, branch["obs"], branch["actions"]))
    finally:
        if env is not None:
            env.close()
    stacked = {k: np.stack(v) for k, v in curves.items()}  # (E, steps+1) each
    window = slice(cfg.t0 + 1, cfg.t0 + 1 + cfg.window)
    base = stacked["none"][:, window].mean(1)
    tests = {}
    for kind in KINDS[1:]:
        diff = stacked[kind][:, window].mean(1) - base
        tests[kind] = {
            "mean_difference": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "ratio": float(stacked[kind][:, window].mean() / base.mean()),
            "p_greater": paired_permutation_p(diff),
        }
    return {
        "config": as_json(cfg),
        "episodes": len(seeds),
        "episodes_tried": tried,
        "seeds": seeds,
        "curves": {k: {"mean": _nan_list(v.mean(0)), "se": _nan_list(v.std(0, ddof=1) / np.sqrt(len(v)))}
                   for k, v in stacked.items()},
        "tests": tests,
        "seconds": round(time.perf_counter() - t_start, 3),
    }  # fmt: skip


def _nan_list(a: np.ndarray) -> list:
    return [None if np.isnan(x) else float(x) for x in a]


def plot(result: dict, path: Path) -> None:
    cfg = result["config"]  # as JSON
    plt = figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, kind in enumerate(KINDS):
        m = np.array(result["curves"][kind]["mean"], dtype=float)
        se = np.array(result["curves"][kind]["se"], dtype=float)
        t = np.arange(len(m))
        p = result["tests"].get(kind, {}).get("p_greater")
        ax.plot(t, m, color=f"C{i}", label=kind if p is None else f"{kind} (p = {p:.2g})")
        ax.fill_between(t, m - se, m + se, color=f"C{i}", alpha=0.2)
    ax.axvline(cfg["t0"] + 0.5, color="grey", ls=":", lw=1)
    ax.set(
        xlabel="step",
        ylabel="surprise (latent MSE), mean ± SE",
        title=f"violation of expectation, {cfg['game']}, {result['episodes']} episodes",
        yscale="log",
    )
    ax.legend(fontsize=8)
    save_png(fig, path)


def surprise_main(cfg: SurpriseConfig) -> None:
    with torch_threads(cfg.threads):
        result = run_surprise(cfg)
    out = cfg.out or Path(cfg.model).parent / "analysis"
    write_json(out / "surprise.json", result)
    plot(result, out / "surprise.png")
    for kind, t in result["tests"].items():
        print(
            f"{kind:>9}: surprise x{t['ratio']:.2f} over the {cfg.window} steps after t0, paired difference "
            f"{t['mean_difference']:+.4f} +- {t['se']:.4f}, p = {t['p_greater']:.2g} ({result['episodes']} episodes)"
        )
    print(f"wrote {out / 'surprise.json'} and surprise.png ({result['seconds']:.0f} s)")
