"""Agents for the evaluation harness, built from a spec string: one interface for every controller.

    random (or uniform)       uniform over the action set
    biased                    the seed's right-biased random baseline (`lemario.control.policies.BiasedPolicy`)
    covering                  biased, with some macros holding any action (`CoveringPolicy`: a corpus of every action)
    planner:PATH              latent CEM/MPC through the world model at PATH (`lemario.control.planner`)
    policy:PATH               an imagination actor-critic policy (`lemario.control.imagination`), sampling its actions
    policy:PATH,PATH,...      an ensemble of such policies: each step samples the normalized geometric mean of their
                              action probabilities (a product of experts: an action any member finds unlikely is
                              unlikely; n copies of one policy play as that policy)
    ppo:PATH                  a Stable-Baselines3 PPO checkpoint (`lemario baseline ppo`), sampling its actions

An agent has `reset(seed)` (called before each episode, seeding its randomness) and `act(obs, info) -> action`.
`make_agent(..., explore=eps)` wraps any agent in `lemario.control.exploring.ExploringAgent`: at each step, with
probability eps, a macro of the biased-random policy (a run, a held jump or a pause) takes over for its few steps (the
flywheel's exploration), everywhere or only in given windows of Mario's x.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from lemario.control.exploring import ExploringAgent
from lemario.control.imagination import load_policy, policy_world_model
from lemario.control.planner import LatentPlanner, PlannerConfig, critic_value, planning_policy, policy_proposals
from lemario.control.policies import make_policy
from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.core.files import read_json
from lemario.games.mario.actions import ACTION_SETS, action_set
from lemario.games.mario.emulator import level_number
from lemario.games.mario.env import EnvConfig
from lemario.model.world_model import ModelConfig, decode_reward, known_actions, load_world_model

SCRIPTED = {"random": "uniform", "uniform": "uniform", "biased": "biased", "covering": "covering"}
MODEL_AGENTS = {"planner": "world_model", "policy": "policy", "ppo": None}


def method_of(spec: str) -> str:
    """The method an agent spec is a seed of: 'uniform', 'biased', 'covering', 'planner', 'policy' or 'ppo'."""
    return SCRIPTED.get(spec) or spec.partition(":")[0]


def validate_spec(spec: str, env_config: EnvConfig | None = None) -> None:
    """Fail with one line when an agent spec is unknown, lacks its checkpoint, names one of another kind, or (given
    the env) chooses among another number of actions than the env's set has."""
    kind, _, path = spec.partition(":")
    if spec in SCRIPTED:
        return
    if kind in MODEL_AGENTS:
        if not path:
            raise LemarioError(f"agent {spec!r} needs a checkpoint: write {kind}:PATH")
        if kind == "ppo":
            if not Path(path).is_file():
                raise LemarioError(f"no PPO checkpoint at {path}: pass the .zip that `lemario baseline ppo` wrote")
            trained = ppo_run_env(path)
            if env_config is not None and trained is not None:
                if trained["action_set"] != env_config.action_set:
                    raise LemarioError(
                        f"the PPO policy {path} was trained with the {trained['action_set']} action set, the env's is "
                        f"{env_config.action_set}: pass --action-set {trained['action_set']}"
                    )
                check_frames(env_frames(trained), env_config, f"the PPO policy {path}")
            return
        for one in member_paths(kind, path):
            meta, model_meta = _metas(kind, one)  # missing, damaged, wrong kind: its message
            if env_config is not None:
                check_action_count(meta["config"]["n_actions"], env_config, f"the {kind} {one}")
                check_frames(model_meta["config"], env_config, f"the {kind} {one}")
        return
    raise LemarioError(
        f"unknown agent {spec!r}: use one of {', '.join(SCRIPTED)}, " + ", ".join(f"{k}:PATH" for k in MODEL_AGENTS)
    )


def member_paths(kind: str, path: str) -> list[str]:
    """The checkpoints a spec's path names: a policy spec may list several, comma-separated (an ensemble)."""
    paths = path.split(",") if kind == "policy" else [path]
    if not all(paths):
        raise LemarioError(f"empty checkpoint in {kind}:{path}: separate an ensemble's paths with single commas")
    return paths


def _metas(kind: str, path: str) -> tuple[dict, dict]:
    """The sidecars of a planner's or policy's checkpoint and of the world model it acts through."""
    meta = checkpoint.load_meta(Path(path), kind=MODEL_AGENTS[kind])
    return meta, meta if kind == "planner" else checkpoint.load_meta(policy_world_model(Path(path), meta))


class ScriptedAgent:
    def __init__(self, policy: str, env_config: EnvConfig):
        self.policy_name, self.action_set = policy, env_config.action_set

    def reset(self, seed: int) -> None:
        self.policy = make_policy(self.policy_name, self.action_set, np.random.default_rng(seed))

    def act(self, obs: np.ndarray, info: dict) -> int:
        return self.policy.act(info)


def check_action_count(n: int, env_config: EnvConfig, what: str) -> None:
    """An agent that chooses among n actions plays only the env's action set of that size (an index means
    other buttons in another set)."""
    have = len(action_set(env_config.action_set))
    if n != have:
        same = [name for name, acts in ACTION_SETS.items() if len(acts) == n]
        fix = f"pass --action-set {same[0]}" if same else "evaluate with the action set it was trained on"
        raise LemarioError(f"{what} chooses among {n} actions, the env's {env_config.action_set} set has {have}: {fix}")


def ppo_run_env(path: str) -> dict | None:
    """The env a PPO checkpoint's run trained in (RUN/config.json beside RUN/checkpoints/), None where it is not
    there (a checkpoint moved out of its run)."""
    try:
        return read_json(Path(path).parent.parent / "config.json")["config"]["env"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def env_frames(env: dict) -> dict:
    """An env config's (as a dict) frames in a model config's names (`model_frames`)."""
    return {k: env["resize" if k == "image_size" else k] for k in EnvConfig().preprocessing}


def model_frames(model_config: dict) -> dict:
    """The frames a world model reads, as `EnvConfig.preprocessing` names them (a model config from before a
    field had that field's default)."""
    return {k: model_config.get(k, v) for k, v in EnvConfig().preprocessing.items()}


def agents_env(specs: tuple[str, ...], env_config: EnvConfig) -> EnvConfig:
    """`env_config` playing the frames its model agents read, when it was left at the default frames and every
    planner, policy and PPO run among `specs` reads the same ones (so `lemario eval
    policy:pretrained/1-1/policy.safetensors` needs no frame flags), and a PPO run's action set where it was left at
    the default. Settings passed explicitly are kept: `validate_spec` names a mismatch, and a spec this cannot read."""
    frames, action_sets = [], set()
    for spec in specs:
        kind, _, path = spec.partition(":")
        if kind == "ppo" and (trained := ppo_run_env(path)) is not None:
            frames.append(env_frames(trained))
            action_sets.add(trained["action_set"])
        elif kind in ("planner", "policy") and path:
            try:
                frames += [model_frames(_metas(kind, one)[1]["config"]) for one in member_paths(kind, path)]
            except LemarioError:
                return env_config
    if len(action_sets) == 1 and env_config.action_set == EnvConfig().action_set:
        env_config = replace(env_config, action_set=action_sets.pop())
    if env_config.preprocessing != EnvConfig().preprocessing or not frames or any(f != frames[0] for f in frames):
        return env_config
    return ModelConfig(**frames[0]).frames_env(env_config)


def with_agents_frames(cfg, specs: tuple[str, ...]):
    """A command's config (one with an `env`) whose env plays the frames its agents read (`agents_env`), saying so
    when that changed it."""
    env = agents_env(specs, cfg.env)
    if env == cfg.env:
        return cfg
    if env.action_set != cfg.env.action_set:
        print(f"playing the action set the PPO policy chooses from: {env.action_set} (--action-set {env.action_set})")
    if env.preprocessing != cfg.env.preprocessing:
        print(
            f"playing the frames the agents read: {env.frame_stack} stacked frames of {env.resize} px, {env.crop_top} "
            f"rows cut from the top, {'' if env.pool else 'no '}max of two frames (--frame-stack {env.frame_stack} "
            f"--resize {env.resize} --crop-top {env.crop_top} {'--pool' if env.pool else '--no-pool'})",
            flush=True,
        )
    return replace(cfg, env=env)


def check_frames(model_config: dict, env_config: EnvConfig, what: str) -> None:
    """A world model reads stacks of the frames it was trained on: the env must give the same stack, size, crop
    and pooling."""
    env, model = env_config.preprocessing, model_frames(model_config)
    if (model["frame_stack"], model["image_size"]) != (env["frame_stack"], env["image_size"]):
        raise LemarioError(
            f"{what} reads stacks of {model['frame_stack']} frames of {model['image_size']} px, the env gives "
            f"{env['frame_stack']} of {env['image_size']} px: pass --frame-stack {model['frame_stack']} --resize "
            f"{model['image_size']}"
        )
    if (model["crop_top"], model["pool"]) != (env["crop_top"], env["pool"]):
        raise LemarioError(
            f"{what} reads frames cut {model['crop_top']} rows from the top, {'' if model['pool'] else 'not '}"
            f"max-pooled; the env's are cut {env['crop_top']}, {'' if env['pool'] else 'not '}max-pooled: pass "
            f"--crop-top {model['crop_top']} {'--pool' if model['pool'] else '--no-pool'}"
        )


def env_level(env_config: EnvConfig) -> torch.Tensor:
    """(1,) the level index of the env's level, as a level-conditioned world model reads it (one it never trained
    on plays as the unknown level)."""
    return torch.tensor([level_number(env_config.level)])


class ProgressCheck:
    """The seed's predictability-bias diagnostic, for any agent that acts through a world model: the progress the
    model predicted for each executed action against the progress the game then made. A policy or plan that
    exploits its model shows predicted progress it never realizes."""

    def reset(self) -> None:
        self.predicted: list[float] = []
        self.realized: list[float] = []
        self.pending: float | None = None
        self.last_x: int | None = None

    def observe(self, info: dict) -> None:
        """At each step's observation: the previous action's realized progress against its prediction."""
        if self.last_x is not None and self.pending is not None:
            self.predicted.append(self.pending)
            self.realized.append(info["x_pos"] - self.last_x)

    def expect(self, dx: float, info: dict) -> None:
        """The model's predicted progress (px) of the action about to be taken from the state `info` describes."""
        self.pending, self.last_x = dx, info["x_pos"]

    def cancel(self) -> None:
        """Another action than the predicted one was executed (an exploration macro)."""
        self.pending = None

    def stats(self) -> dict:
        pred, real = np.array(self.predicted), np.array(self.realized)
        return {
            "predicted_dx_mean": float(pred.mean()) if len(pred) else 0.0,
            "realized_dx_mean": float(real.mean()) if len(real) else 0.0,
            "dx_correlation": float(np.corrcoef(pred, real)[0, 1])
            if len(pred) > 2 and pred.std() > 0 and real.std() > 0
            else 0.0,
        }


class PlannerAgent:
    """Encodes each observation, keeps the predictor's history of latents, re-plans with CEM every
    `replan_every` steps, and records the seed's predictability-bias diagnostic: how many planned actions stand
    still, and predicted against realized progress of each executed action (`ProgressCheck`)."""

    def __init__(self, model, cfg: PlannerConfig, env_config: EnvConfig, allowed: torch.Tensor | None = None):
        """allowed (A,) bool: the actions the planner may choose (`known_actions` of the model's sidecar)."""
        check_action_count(model.cfg.n_actions, env_config, "the world model")
        check_frames(asdict(model.cfg), env_config, "the world model")
        actions = action_set(env_config.action_set)
        self.model, self.cfg, self.level = model, cfg, env_level(env_config)
        ac = planning_policy(Path(cfg.value), model) if cfg.value else None
        value = critic_value(ac, model) if ac is not None else None
        propose = policy_proposals(ac, model, cfg.policy_samples, cfg.horizon) if cfg.prior == "policy" else None
        self.planner = LatentPlanner(model, cfg, actions, value, allowed, propose)
        self.standing = torch.tensor([not ({"left", "right"} & set(a)) for a in actions])

    def reset(self, seed: int) -> None:
        self.stats = {"planned": 0, "planned_standing": 0}
        self.check = ProgressCheck()
        self.check.reset()
        self.generator = torch.Generator().manual_seed(seed)
        self.latents: list[torch.Tensor] = []
        self.past: list[int] = []
        self.plan: list[int] = []
        self.expected: list[float] = []

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict) -> int:
        self.check.observe(info)
        z = self.model.encode(torch.from_numpy(obs)[None], self.level)[0]  # (D,)
        self.latents = (self.latents + [z])[-self.model.history :]
        if not self.plan or len(self.plan) <= self.cfg.horizon - self.cfg.replan_every:
            context = torch.stack(self.latents)[None]  # (1, c, D)
            before = ([0] * len(self.latents) + self.past)[-len(self.latents) :]  # NOOP before the first frame
            past = torch.tensor(before, dtype=torch.int64)[None]  # (1, c) the action before each latent
            keep = (
                torch.tensor(self.plan + [self.plan[-1]] * (self.cfg.horizon - len(self.plan))) if self.plan else None
            )
            seq, _, rewards = self.planner.plan(context, past, self.generator, keep)
            self.plan, self.expected = seq.tolist(), rewards[:, 0].tolist()
            self.stats["planned"] += len(self.plan)
            self.stats["planned_standing"] += int(self.standing[seq].sum())
        action = self.plan.pop(0)
        self.check.expect(self.expected.pop(0), info)
        self.past.append(action)
        return action

    def executed(self, action: int) -> None:
        """The env took `action` instead of the one just returned (an exploration macro): the history of actions
        before each latent holds what was done, and the predicted progress was for another action."""
        self.past[-1] = action
        self.check.cancel()

    def episode_stats(self) -> dict:
        """The predictability-bias diagnostic of the last episode."""
        s = self.stats
        return {"planned_standing_share": s["planned_standing"] / max(1, s["planned"]), **self.check.stats()}


def ensemble_probs(dists: list[torch.distributions.Categorical]) -> torch.Tensor:
    """(N, A) the normalized geometric mean of the members' action probabilities (one member: its own, as is)."""
    if len(dists) == 1:
        return dists[0].probs
    return torch.distributions.Categorical(logits=torch.stack([d.logits for d in dists]).mean(0)).probs


class PolicyAgent:
    """Encodes the observation with the policy's world model and samples pi(a|s), s its state (the latent, and
    the agent's own last action when the world model takes it); records the progress its world model predicts for
    each action against the game's (`ProgressCheck`, through the first policy's world model).

    Several policies play as one: each reads the observation through its own world model (encoded once per distinct
    model file) and the agent samples the normalized geometric mean of their probabilities."""

    def __init__(self, paths: list[Path], env_config: EnvConfig):
        models: dict[Path, object] = {}
        self.members = []  # (actor-critic, world model)
        for path in paths:
            ac, model, meta = load_policy(path)
            check_action_count(model.cfg.n_actions, env_config, f"the policy {path}")
            check_frames(asdict(model.cfg), env_config, f"the policy {path}")
            self.members.append((ac, models.setdefault(policy_world_model(path, meta).resolve(), model)))
        self.model = self.members[0][1]
        self.level = env_level(env_config)

    def reset(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.last = torch.zeros(1, dtype=torch.int64)  # NOOP before the first frame
        self.check = ProgressCheck()
        self.check.reset()

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict) -> int:
        self.check.observe(info)
        frame = torch.from_numpy(obs)[None]
        latents = {id(model): model.encode(frame, self.level) for _, model in self.members}  # each (1, D)
        probs = ensemble_probs([ac.dist(model.state(latents[id(model)], self.last)) for ac, model in self.members])
        action = torch.multinomial(probs, 1, generator=self.generator)[0]  # (1,)
        if self.model.cfg.reward_head:
            z = latents[id(self.model)]
            nxt = self.model.rollout(z[:, None], action[:, None], self.last)  # (1, 1, D)
            self.check.expect(float(decode_reward(self.model.reward(nxt, action[:, None]))[0, 0, 0]), info)
        self.last = action
        return int(action[0])

    def executed(self, action: int) -> None:
        """The env took `action` instead of the one just returned: the next state's previous action is it."""
        self.last = torch.tensor([action])
        self.check.cancel()

    def episode_stats(self) -> dict:
        """The predictability-bias diagnostic of the last episode."""
        return self.check.stats()


class PPOAgent:
    """A Stable-Baselines3 PPO policy; actions sampled (the seed-001 lesson: its argmax lags the stochastic policy)."""

    def __init__(self, path: Path, env_config: EnvConfig):
        with contextlib.redirect_stderr(io.StringIO()):  # SB3 imports gym when it is installed; silence its notice
            from stable_baselines3 import PPO  # a heavy import, only for PPO agents

        self.model = PPO.load(path, device="cpu")
        check_action_count(int(self.model.action_space.n), env_config, f"the PPO policy {path}")

    def reset(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict) -> int:
        policy = self.model.policy
        obs_t, _ = policy.obs_to_tensor(obs)
        probs = policy.get_distribution(obs_t).distribution.probs  # (1, A)
        return int(torch.multinomial(probs, 1, generator=self.generator)[0, 0])


def make_agent(
    spec: str,
    env_config: EnvConfig,
    planner: PlannerConfig | None = None,
    explore: float = 0.0,
    explore_x: tuple[int, ...] = (),
):
    """The agent of a spec, for an env of `env_config`; `explore` > 0 mixes in biased-random macros (only where
    Mario's x lies in one of the `explore_x` windows, when given: `lemario.control.exploring`)."""
    agent = _make_agent(spec, env_config, planner)
    return ExploringAgent(agent, explore, env_config.action_set, explore_x) if explore else agent


def _make_agent(spec: str, env_config: EnvConfig, planner: PlannerConfig | None):
    validate_spec(spec)
    if spec in SCRIPTED:
        return ScriptedAgent(SCRIPTED[spec], env_config)
    kind, _, path = spec.partition(":")
    if kind == "policy":
        return PolicyAgent([Path(p) for p in member_paths(kind, path)], env_config)
    if kind == "ppo":
        return PPOAgent(Path(path), env_config)
    model, meta = load_world_model(Path(path))
    cfg = planner or PlannerConfig()
    return PlannerAgent(model, cfg, env_config, known_actions(meta, cfg.min_action_share))
