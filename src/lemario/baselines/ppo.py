"""`lemario baseline ppo`: the model-free baseline, Stable-Baselines3 PPO with the recipe that cleared 1-1.

The seed-001 recipe's defaults: simple action set, 8 parallel envs on the fast backend, gamma 0.9 (the knob
that got PPO past the first pit), GAE 0.95, lr 2.5e-4, 512 steps x 8 envs per update, batch 256, 4 epochs,
clip 0.2, entropy 0.05, reward normalization (VecNormalize, clip 10), the shaping of
`lemario.baselines.shaping`, +1.0 on the initial logits of jump actions, and an RND curiosity bonus (coef 0.3)
whose state is saved with every checkpoint. Every `eval_every` env steps the current policy is evaluated with
lemario's harness (stochastic actions, eval-only seeds); `best_eval` keeps the best, `step_N.zip` every
`keep_every` env steps, and the run resumes from its latest checkpoint. metrics.jsonl records training episodes
and evaluations; state.json the first env step at which a training episode reached x >= 700 / 1500 / 2000 and
the flag (`first_reached`: exploration, and luck: a near-random policy can stumble far), and at which an
evaluation's mean max_x reached them and half of its episodes took the flag (`first_eval_reached`: what the
policy does).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.baselines.milestones import record_milestones
from lemario.baselines.rnd import RND, RNDBonus
from lemario.baselines.sb3 import PPO, BaseCallback, DummyVecEnv, Monitor, SubprocVecEnv, VecNormalize
from lemario.baselines.shaping import ShapedReward, ShapingConfig
from lemario.core import runlog
from lemario.core.device import resolve_device
from lemario.core.errors import LemarioError
from lemario.core.executor import forkserver
from lemario.core.files import atomic_write_text, check_writable, read_json, write_json, writer_lock
from lemario.core.progress import progress_bar
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, check_same_run, run_key
from lemario.games.mario.actions import action_set
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.games.mario.levels import TRAIN_LEVELS
from lemario.play.evaluate import EvalConfig, evaluate, evaluate_levels


@dataclass(frozen=True)
class PPOConfig:
    out: Path = Path("runs/ppo-1-1")
    """Run folder (resumed when it holds a checkpoint)."""
    timesteps: int = 2_000_000
    """Total environment (agent) steps, over all envs."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(
        default_factory=lambda: EnvConfig(action_set="simple", max_steps=2000)
    )
    """The game (`lemario.games.mario.env.EnvConfig`); the recipe plays the simple set, 2000 steps an episode."""
    n_envs: int = 8
    gamma: float = 0.9
    gae_lambda: float = 0.95
    learning_rate: float = 2.5e-4
    n_steps: int = 512
    batch_size: int = 256
    n_epochs: int = 4
    clip_range: float = 0.2
    ent_coef: float = 0.05
    normalize_reward: bool = True
    norm_reward_clip: float = 10.0
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    action_bias_jump: float = 1.0
    """Added to the initial logits of actions that press A."""
    rnd_coef: float = 0.3
    """Weight of the RND curiosity bonus (0 disables it)."""
    eval_every: int = 50_000
    eval_episodes: int = 10
    checkpoint_every: int = 100_000
    """Env steps between saves of checkpoints/latest (what a resume starts from)."""
    keep_every: int = 100_000
    """Env steps between policies kept as checkpoints/step_N.zip, to evaluate later at equal env steps (0: none)."""
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    levels: tuple[str, ...] = ()
    """Train on each of these levels instead of --level, the envs dealt out in turn (--n-envs a multiple of their
    number), and evaluate on each: an evaluation's mean max_x pools them (issue 21's multi-level PPO)."""
    init_from: Path | None = None
    """Start from the policy of this PPO checkpoint (e.g. RUN/checkpoints/best_eval.zip of a run on other levels)
    instead of a fresh one: issue 21's fine-tuning row. Its reward statistics, curiosity and optimizer start afresh."""

    def validate(self) -> None:
        """Every check that can fail before an env starts."""
        self.env.validate()
        self.env.validate_levels(self.levels)
        if self.levels and self.n_envs % len(self.levels):
            raise LemarioError(
                f"--n-envs {self.n_envs} does not deal evenly over {len(self.levels)} levels: pass a multiple of "
                f"{len(self.levels)}"
            )
        if self.init_from is not None and not self.init_from.is_file():
            raise LemarioError(
                f"--init-from {self.init_from}: no such file: pass a PPO checkpoint, RUN/checkpoints/NAME.zip"
            )


PRESETS = {
    "tiny": PPOConfig(
        out=Path("runs/ppo-tiny"),
        timesteps=128,
        n_envs=2,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        env=EnvConfig(action_set="simple", max_steps=60),
        eval_every=64,
        eval_episodes=1,
        checkpoint_every=64,
        keep_every=64,
    ),
    "cpu": PPOConfig(),
    "gpu": PPOConfig(timesteps=10_000_000, n_envs=16, keep_every=500_000),
    # Issue 21: one policy for the training levels, an env on each; fine-tune it on a held-out level with
    # `--level 5-1 --init-from runs/ppo-levels/checkpoints/best_eval.zip`, against the cpu preset from scratch there.
    "cpu-levels": PPOConfig(out=Path("runs/ppo-levels"), levels=TRAIN_LEVELS, n_envs=6),
}
BOOKKEEPING = ("out", "timesteps", "checkpoint_every", "keep_every", "progress", "device")
"""Fields a run's later invocations may change: they do not change what it learns."""


def _make_env(cfg: PPOConfig, rank: int):
    env_cfg = replace(cfg.env, level=cfg.levels[rank % len(cfg.levels)]) if cfg.levels else cfg.env

    def thunk():
        env = SuperMarioBros(env_cfg)
        env.reset(seed=cfg.seed * 1000 + rank)
        return Monitor(ShapedReward(env, cfg.shaping), info_keywords=("max_x", "flag_get"))

    return thunk


def make_vec_env(cfg: PPOConfig):
    """The recipe's vector env (shaped reward, RND bonus, reward normalization) and its RND (None without)."""
    thunks = [_make_env(cfg, i) for i in range(cfg.n_envs)]
    if cfg.n_envs > 1:
        forkserver()  # its preload set: env processes start without importing torch again
        venv = SubprocVecEnv(thunks, start_method="forkserver")
    else:
        venv = DummyVecEnv(thunks)
    rnd = None
    if cfg.rnd_coef > 0:
        rnd = RND(seed=cfg.seed)
        venv = RNDBonus(venv, rnd, cfg.rnd_coef)
    venv = VecNormalize(
        venv, norm_obs=False, norm_reward=cfg.normalize_reward, clip_reward=cfg.norm_reward_clip, gamma=cfg.gamma
    )
    return venv, rnd


def new_model(cfg: PPOConfig, venv, device: str, tensorboard_log: str | None = None) -> PPO:
    """A fresh PPO of the recipe, the jump bias added to its initial logits."""
    model = PPO(
        "CnnPolicy",
        venv,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        seed=cfg.seed,
        device=device,
        tensorboard_log=tensorboard_log,
        verbose=0,
    )
    jumps = [i for i, a in enumerate(action_set(cfg.env.action_set)) if "A" in a]
    with torch.no_grad():
        model.policy.action_net.bias[jumps] += cfg.action_bias_jump
    return model


def init_policy(model: PPO, path: Path) -> None:
    """Copy the policy (trunk, actor and critic) of the PPO checkpoint at `path` into `model`."""
    source = PPO.load(path, device=model.device)
    if source.observation_space != model.observation_space or source.action_space != model.action_space:
        raise LemarioError(
            f"--init-from {path}: its policy reads {source.observation_space.shape} frames over "
            f"{source.action_space.n} actions, this run's env gives {model.observation_space.shape} over "
            f"{model.action_space.n}: pass the env options (--action-set, --resize, ...) it was trained with"
        )
    model.policy.load_state_dict(source.policy.state_dict())


def save_run_state(model: PPO, venv: VecNormalize, rnd, path: Path) -> None:
    """PATH.zip (SB3), PATH.vecnorm.json (reward normalization statistics, no pickle), PATH.rnd.{safetensors,json}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.zip")
    model.save(tmp)
    tmp.replace(path.with_suffix(".zip"))
    r = venv.ret_rms
    atomic_write_text(
        path.with_suffix(".vecnorm.json"),
        json.dumps(
            {"mean": r.mean.tolist(), "var": r.var.tolist(), "count": float(r.count), "returns": venv.returns.tolist()}
        ),
    )
    if rnd is not None:
        rnd.save(path.with_suffix(".rnd.safetensors"))


def load_run_state(path: Path, venv: VecNormalize, rnd, device: str) -> PPO:
    """The PPO model of a checkpoint, its reward normalization and RND restored into `venv` and `rnd`."""
    model = PPO.load(path.with_suffix(".zip"), env=venv, device=device)
    v = read_json(path.with_suffix(".vecnorm.json"))
    venv.ret_rms.mean, venv.ret_rms.var, venv.ret_rms.count = np.array(v["mean"]), np.array(v["var"]), v["count"]
    if rnd is not None:
        rnd.load(path.with_suffix(".rnd.safetensors"))
    return model


def drop_lost_rows(path: Path, env_steps: int, next_eval: int) -> None:
    """Rewrite metrics.jsonl as of a checkpoint at `env_steps`: the rows a killed run logged after it are of a
    timeline the resumed run replaces, and an evaluation row at or past `next_eval` is one the resume re-runs."""
    runlog.keep_rows(
        path, lambda r: r["env_steps"] <= env_steps and not ("eval/mean_max_x" in r and r["env_steps"] >= next_eval)
    )


class LemarioCallback(BaseCallback):
    """metrics.jsonl rows, milestones, periodic checkpoints and harness evaluations (keeping best_eval)."""

    def __init__(self, cfg: PPOConfig, venv, rnd, state: dict):
        super().__init__()
        self.cfg, self.venv, self.rnd, self.state = cfg, venv, rnd, state
        self.t0 = (
            time.time() - state["elapsed"]
        )  # metrics' time: wall seconds of training behind these env steps, over resumes
        self.bar = None

    def _on_training_start(self) -> None:
        self.bar = progress_bar(
            total=self.cfg.timesteps, initial=int(self.num_timesteps), progress=self.cfg.progress, unit="step"
        )

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _log(self, row: dict) -> None:
        elapsed = round(time.time() - self.t0, 1)
        runlog.append_row(self.cfg.out / runlog.NAME, {"env_steps": int(self.num_timesteps), "time": elapsed, **row})

    def _on_step(self) -> bool:
        self.bar.update(int(self.num_timesteps) - self.bar.n)
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is None:
                continue
            x, flag = int(ep["max_x"]), int(ep["flag_get"])
            self._log(
                {
                    "episode/max_x": x,
                    "episode/return": float(ep["r"]),
                    "episode/steps": int(ep["l"]),
                    "episode/flag": flag,
                }
            )
            self.state["best_train_x"] = max(self.state["best_train_x"], x)
            self.bar.set_postfix(
                {"best_x": self.state["best_train_x"], "best_eval": round(self.state["best_eval"])}, refresh=False
            )
            record_milestones(self.state["first_reached"], int(self.num_timesteps), x, bool(flag))
        due_eval = self.num_timesteps >= self.state["next_eval"]
        due_keep = self.cfg.keep_every > 0 and self.num_timesteps >= self.state["next_keep"]
        due_checkpoint = self.num_timesteps >= self.state["next_checkpoint"]
        if due_checkpoint:
            self.state["next_checkpoint"] += self.cfg.checkpoint_every
        if due_checkpoint or due_eval or due_keep:
            self._checkpoint(keep=due_keep)  # state.json still names a due evaluation due: a kill during it re-runs it
        if due_eval:
            self._evaluate()
        return True

    def _write_state(self) -> None:
        self.state["elapsed"] = round(time.time() - self.t0, 1)
        write_json(self.cfg.out / "state.json", {**self.state, "env_steps": int(self.num_timesteps)})

    def _checkpoint(self, keep: bool) -> None:
        ckpt = self.cfg.out / "checkpoints"
        save_run_state(self.model, self.venv, self.rnd, ckpt / "latest")
        if keep:
            self.state["next_keep"] = (self.num_timesteps // self.cfg.keep_every + 1) * self.cfg.keep_every
            tmp = ckpt / f".step_{self.num_timesteps}.tmp.zip"
            shutil.copyfile(ckpt / "latest.zip", tmp)
            tmp.replace(ckpt / f"step_{self.num_timesteps}.zip")
        self._write_state()

    def _evaluate(self) -> None:
        latest = self.cfg.out / "checkpoints" / "latest.zip"
        ecfg = EvalConfig(
            agents=(f"ppo:{latest}",),
            episodes=self.cfg.eval_episodes,
            workers=1,
            env=self.cfg.env,
            levels=self.cfg.levels,
            out=self.cfg.out / "evals" / f"step_{self.num_timesteps:09d}",
            progress=False,  # inside the training's own bar
        )
        if ecfg.levels:
            per_level = evaluate_levels(ecfg)
        else:
            evaluate(ecfg)
            per_level = {}
        agg = next(iter(read_json(ecfg.out / "summary.json")["per_agent"].values()))  # with levels: them pooled
        row = {f"eval/{k}": agg[k] for k in ("mean_max_x", "max_max_x", "flag_rate", "ci95_low", "ci95_high")}
        for level, s in per_level.items():
            a = next(iter(s["per_agent"].values()))
            row |= {f"eval/{level}/mean_max_x": a["mean_max_x"], f"eval/{level}/flag_rate": a["flag_rate"]}
        self._log(row)
        self.state["next_eval"] += self.cfg.eval_every
        record_milestones(
            self.state["first_eval_reached"], int(self.num_timesteps), agg["mean_max_x"], agg["flag_rate"] >= 0.5
        )
        if agg["mean_max_x"] > self.state["best_eval"]:
            self.state["best_eval"] = agg["mean_max_x"]
            best = self.cfg.out / "checkpoints" / "best_eval"
            for suffix in (".zip", ".vecnorm.json", ".rnd.safetensors", ".rnd.json"):
                src = latest.with_suffix(suffix)
                if src.exists():
                    shutil.copyfile(src, best.with_suffix(suffix))
        self._write_state()


def train_ppo(cfg: PPOConfig) -> dict:
    """Train (or resume) a PPO run in `cfg.out`; returns its state (env steps, milestones, best evaluation)."""
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        config_path = cfg.out / "config.json"
        if config_path.exists():
            stored = read_json(config_path)["config"]
            stored_key = {k: v for k, v in stored.items() if k not in BOOKKEEPING}
            check_same_run(stored_key, run_key(cfg, BOOKKEEPING), run_key(PPOConfig(), BOOKKEEPING), cfg.out, "PPO run")
        write_json(config_path, {"config": as_json(cfg), **provenance()})
        venv, rnd = make_vec_env(cfg)
        device = str(resolve_device(cfg.device))
        latest = cfg.out / "checkpoints" / "latest"
        state_path = cfg.out / "state.json"
        state = {
            "first_reached": {},
            "first_eval_reached": {},
            "best_eval": -1.0,
            "best_train_x": 0,
            "next_eval": cfg.eval_every,
            "next_checkpoint": cfg.checkpoint_every,
            "next_keep": cfg.keep_every,
            "elapsed": 0.0,
        }
        try:
            if latest.with_suffix(".zip").exists():
                model = load_run_state(latest, venv, rnd, device)
                state.update({k: v for k, v in read_json(state_path).items() if k in state})
                drop_lost_rows(cfg.out / runlog.NAME, int(model.num_timesteps), state["next_eval"])
                print(f"resuming {cfg.out} at {model.num_timesteps} env steps")
            else:
                model = new_model(cfg, venv, device, tensorboard_log=str(cfg.out / "tb"))
                if cfg.init_from is not None:
                    init_policy(model, cfg.init_from)
                    print(f"starting from the policy of {cfg.init_from}")
            callback = LemarioCallback(cfg, venv, rnd, state)
            remaining = cfg.timesteps - model.num_timesteps
            if remaining > 0:
                model.learn(
                    remaining, callback=callback, reset_num_timesteps=False, progress_bar=False, tb_log_name="ppo"
                )
            save_run_state(model, venv, rnd, cfg.out / "checkpoints" / "final")
            state["env_steps"], state["elapsed"] = int(model.num_timesteps), round(time.time() - callback.t0, 1)
            write_json(state_path, state)
        finally:
            venv.close()
    return state


def ppo_main(cfg: PPOConfig) -> None:
    state = train_ppo(cfg)
    print(
        f"{cfg.out}: {state['env_steps']} env steps, best eval mean max_x {state['best_eval']:.0f}; first reached "
        "by a training "
        f"episode: {state['first_reached'] or 'none of x>=700/1500/2000/flag'}; by an evaluation's mean: "
        f"{state['first_eval_reached'] or 'none'}"
    )
