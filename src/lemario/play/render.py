"""`lemario render AGENT`: the best of N episodes as MP4 and GIF, with an overlay, a latent-drift strip and,
given a decoder (`lemario analyze decoder`), the world model's dreams decoded beside the game.

The agent plays N episodes on the evaluation seeds; the best one (furthest max_x, or the fastest clear) is
replayed exactly (same seed, deterministic emulator and agent) and drawn: the game at 2x, x, the chosen
action and, for world-model agents, the predicted progress of that action; below it a strip of how far the
world model's imagined latent drifts from the real one, k steps after the imagination starts
(||z_hat(t | t-k) - z(t)|| / ||z(t)||, k = the planner's horizon), with the current step marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw

from lemario.control.agents import env_level, make_agent, validate_spec, with_agents_frames
from lemario.core.files import check_writable, write_json
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json
from lemario.games.mario.actions import action_label, action_set
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.model.decoder import load_decoder, strip
from lemario.model.world_model import load_world_model
from lemario.play.episodes import play
from lemario.play.evaluate import EVAL_SEED_BASE

SCALE, PANEL = 2, 64


@dataclass(frozen=True)
class RenderConfig:
    agent: tyro.conf.Positional[str]
    """Agent spec: random, biased, planner:PATH, policy:PATH."""
    episodes: int = 5
    """Candidates; the best is rendered."""
    eval_seed: int | None = None
    """Render exactly the episode of this evaluation seed (e.g. one from an eval's episodes.jsonl) instead."""
    rank_by: str = "max_x"
    """'max_x' (furthest) or 'fastest_clear' (fewest steps among flag episodes, else furthest)."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=EnvConfig)
    """The game (`lemario.games.mario.env.EnvConfig`): --level, --backend, --action-set, --max-steps, ..."""
    drift_k: int = 15
    """Steps of imagination before the drift is measured."""
    world_model: Path | None = None
    """World model for the drift strip of agents that have none (random, biased)."""
    decoder: Path | None = None
    """A decoder (`lemario analyze decoder`): its world model's dream of each moment, imagined drift_k steps
    earlier under the actions played, decoded beside the game; and dreams.png (real, decoded, dreamed) and
    dream_long.png (one open-loop dream from the first frame, to see where it drifts)."""
    out: Path = Path("runs/render")
    fps: int = 15
    gif_width: int = 256


def choose(rows: list[dict], rank_by: str) -> dict:
    """The episode to render: the furthest (fewest steps among ties), or with 'fastest_clear' the quickest flag."""
    if rank_by == "fastest_clear" and any(r["flag_get"] for r in rows):
        return min((r for r in rows if r["flag_get"]), key=lambda r: r["steps"])
    if rank_by not in ("max_x", "fastest_clear"):
        raise ValueError(rank_by)
    return max(rows, key=lambda r: (r["max_x"], -r["steps"]))


@torch.no_grad()
def k_step_dreams(model, latents: torch.Tensor, actions: torch.Tensor, k: int) -> torch.Tensor:
    """(T, D) the k-step open-loop prediction of each latent, all in one batch (NaN rows for the first k).
    latents (T, D), actions (T-1,) the action after each."""
    T = len(latents)
    out = torch.full_like(latents, float("nan"))
    if T > k:
        before = torch.cat([torch.zeros(1, dtype=actions.dtype), actions])  # (T,) the action before each latent
        starts = torch.arange(T - k)
        windows = actions[starts[:, None] + torch.arange(k)]  # (T-k, k) the k actions from each start
        out[k:] = model.rollout(latents[starts, None], windows, before[starts])[:, -1]
    return out


def latent_drift(dreams: torch.Tensor, latents: torch.Tensor) -> np.ndarray:
    """(T,) relative error ||z_hat - z|| / ||z|| of each k-step dream (NaN where there is none)."""
    return ((dreams - latents).norm(dim=-1) / latents.norm(dim=-1).clamp_min(1e-6)).numpy()


def compose(
    rgb: np.ndarray, text: str, drift: np.ndarray | None, t: int, dream: np.ndarray | None = None
) -> np.ndarray:
    """One video frame: the game at SCALE x, beside it the decoded dream of this moment (when given), a text line
    and the drift strip."""
    h, w = rgb.shape[0] * SCALE, rgb.shape[1] * SCALE
    canvas = Image.new("RGB", (w + (h if dream is not None else 0), h + PANEL), (16, 16, 16))
    canvas.paste(Image.fromarray(rgb).resize((w, h), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if dream is not None:
        canvas.paste(Image.fromarray(dream).convert("RGB").resize((h, h), Image.BILINEAR), (w, 0))
        draw.text((w + 6, 4), "dream", fill=(250, 200, 90))
    draw.text((6, h + 4), text, fill=(240, 240, 240))
    if drift is not None and np.isfinite(drift).any():
        top, height = h + 22, PANEL - 28
        scale = max(np.nanmax(drift), 1e-6)
        xs = np.linspace(4, w - 4, len(drift))
        for i, d in enumerate(drift):
            if np.isfinite(d):
                bar = int(height * d / scale)
                draw.line([(xs[i], top + height), (xs[i], top + height - bar)], fill=(90, 170, 250))
        draw.line([(xs[t], top - 2), (xs[t], top + height)], fill=(250, 80, 80))
        draw.text(
            (w - 150, h + 4), f"drift {drift[t]:.2f}" if np.isfinite(drift[t]) else "drift -", fill=(90, 170, 250)
        )
    return np.asarray(canvas)


def _record(env: SuperMarioBros, agent, seed: int, labels: list[str]) -> tuple[dict, list, list, list, list]:
    """Play one episode recording its RGB frames, observations, actions and one overlay line per frame."""
    frames, observations, actions, texts, x = [], [], [], [], [0]

    def on_step(obs: np.ndarray, action: int | None, info: dict) -> None:
        if action is not None:
            expected = getattr(agent, "pending", None)  # a planner's predicted progress of this action
            pred = f" pred dx {expected:+.1f}" if expected is not None else ""
            texts.append(f"x {x[0]:>4}  {labels[action]:<10}{pred}")
            actions.append(action)
        frames.append(env.rgb_frame())
        observations.append(obs)
        x[0] = info["x_pos"]

    row = play(env, agent, seed, on_step)
    texts.append(f"x {row['final_x']:>4}  end: {'flag' if row['flag_get'] else 'over'}")
    return row, frames, observations, actions, texts


@torch.no_grad()
def dream_figures(cfg: RenderConfig, obs: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
    """dreams.png and dream_long.png of an episode's (T+1, S, H, W) observations and (T,) actions; returns each
    moment's decoded drift_k-step dream as (T+1, H, W) uint8 (black before there is one)."""
    decoder, model = load_decoder(cfg.decoder)
    k = cfg.drift_k
    z = model.encode(obs, env_level(cfg.env))  # (T+1, D)
    dreams = k_step_dreams(model, z, actions, k)
    decoded = torch.zeros(len(z), *decoder(z[:1]).shape[1:])  # (T+1, C, H, W)
    decoded[k:] = decoder(dreams[k:])
    real = obs[:, -1:].float() / 255.0  # (T+1, 1, H, W) the newest frame of each stack
    if len(z) > k:
        times = np.linspace(k, len(z) - 1, min(8, len(z) - k)).round().astype(int)
        rows = {"real": real[times], "decoded": decoder(z[times]), f"dreamed {k} steps": decoded[times]}
        strip(rows, [f"t={t}" for t in times], cfg.out / "dreams.png", f"dreams {k} steps ahead")
    n = min(64, len(actions))
    first = torch.zeros(1, dtype=actions.dtype)
    long = torch.cat([z[:1], model.rollout(z[None, :1], actions[None, :n], first)[0]])  # (n+1, D)
    times = np.linspace(0, n, min(9, n + 1)).round().astype(int)
    rows = {"real": real[times], "dreamed": decoder(long[times])}
    strip(rows, [f"t={t}" for t in times], cfg.out / "dream_long.png", "one open-loop dream from the first frame")
    return (decoded[:, 0] * 255).round().byte().numpy()


def _write_video(cfg: RenderConfig, video: list[np.ndarray]) -> tuple[Path, Path, int]:
    """best.mp4 at cfg.fps and a ~8 fps best.gif of cfg.gif_width pixels; returns both paths and the GIF's frames."""
    mp4, gif = cfg.out / "best.mp4", cfg.out / "best.gif"
    imageio.mimwrite(mp4, video, fps=cfg.fps, codec="libx264", quality=7, macro_block_size=16)
    step = max(1, round(cfg.fps / 8))
    size = lambda f: (cfg.gif_width, int(f.shape[0] * cfg.gif_width / f.shape[1]))  # noqa: E731
    small = [np.asarray(Image.fromarray(f).resize(size(f))) for f in video[::step]]
    imageio.mimwrite(gif, small, duration=1000 * step / cfg.fps, loop=0)
    return mp4, gif, len(small)


def render(cfg: RenderConfig) -> dict:
    """Play the candidates, replay the best with its frames recorded, and write the videos and render.json."""
    validate_spec(cfg.agent, cfg.env)
    check_writable(cfg.out)
    env = SuperMarioBros(cfg.env)
    try:
        agent = make_agent(cfg.agent, env.config)
        seeds = [cfg.eval_seed] if cfg.eval_seed is not None else [EVAL_SEED_BASE + i for i in range(cfg.episodes)]
        rows = [play(env, agent, seed) for seed in seeds]
        best = choose(rows, cfg.rank_by)
        labels = [action_label(a) for a in action_set(cfg.env.action_set)]
        replay, frames, observations, actions, texts = _record(env, agent, best["eval_seed"], labels)
        if replay != best:
            raise RuntimeError(f"the replay of seed {best['eval_seed']} did not reproduce its episode")
    finally:
        env.close()
    model = getattr(agent, "model", None)
    if model is None and cfg.world_model is not None:
        model, _ = load_world_model(cfg.world_model)
    drift = pictures = None
    obs, acts = torch.from_numpy(np.stack(observations)), torch.tensor(actions)
    if model is not None:
        with torch.no_grad():
            z = model.encode(obs, env_level(cfg.env))  # (T+1, D)
        drift = latent_drift(k_step_dreams(model, z, acts, cfg.drift_k), z)
    if cfg.decoder is not None:
        pictures = dream_figures(cfg, obs, acts)
    video = [
        compose(f, txt, drift, t, None if pictures is None else pictures[t])
        for t, (f, txt) in enumerate(zip(frames, texts))
    ]
    mp4, gif, gif_frames = _write_video(cfg, video)
    mean_drift = float(np.nanmean(drift)) if drift is not None and np.isfinite(drift).any() else None
    summary = {
        "agent": cfg.agent,
        "candidates": rows,
        "chosen": best,
        "frames": len(video),
        "gif_frames": gif_frames,
        "mp4": str(mp4),
        "gif": str(gif),
        "mean_drift": mean_drift,
        "config": as_json(cfg),
        **provenance(),
    }
    write_json(cfg.out / "render.json", summary)
    return summary


def render_main(cfg: RenderConfig) -> None:
    cfg = with_agents_frames(cfg, (cfg.agent,))
    s = render(cfg)
    c = s["chosen"]
    print(
        f"best of {len(s['candidates'])}: seed {c['eval_seed']}, max_x {c['max_x']}, {c['steps']} steps, end {c['end']}"
    )
    print(f"wrote {s['mp4']} ({s['frames']} frames) and {s['gif']} ({s['gif_frames']} frames)")
