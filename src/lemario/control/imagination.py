"""`lemario imagine`: a Dreamer-style actor-critic trained only inside the frozen world model.

pi(a|s) and V(s) are small MLPs on the world model's state s (`WorldModel.state`: the latent, with the previous
action when the model takes it). Each update starts from real encoded states of the corpus,
imagines `horizon` steps with the predictor (actions sampled from pi) and the reward head (progress, score,
death), and computes lambda-returns with the death probability as the continuation flag. The critic regresses
symlog returns; a slow copy of it (EMA) supplies the bootstrap values. Returns are normalized by the EMA of
their 5th-95th percentile range (at least 1) before the REINFORCE advantage; an entropy bonus keeps pi
from collapsing. With `--imitate W` the actor also learns the actions the corpus's flag-reaching episodes took
(`lemario.control.corpus_states`). Policies are checkpointed like world models (safetensors + JSON sidecar, kind
"policy").
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lemario.control.corpus_states import corpus_starts, imitation_batches, imitation_loss
from lemario.control.reward import RewardWeights, ends, scalar_reward
from lemario.core import checkpoint, runlog
from lemario.core.device import module_device, resolve_device
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import check_writable, writer_lock
from lemario.core.progress import progress_bar
from lemario.core.runconfig import as_json
from lemario.data.buffer import EpisodeBuffer
from lemario.model.trainer import read_episode_list
from lemario.model.world_model import PROGRESS_SCALE, decode_reward, known_actions, load_world_model

RETURN_UNIT = PROGRESS_SCALE
"""Pixels of progress per unit of the critic's returns (symlog is near linear around 1)."""


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def lambda_returns(
    rewards: torch.Tensor, values: torch.Tensor, continues: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """DreamerV3's lambda-returns. rewards (B, H): reward of step t; continues (B, H): 1 - P(episode ends at t);
    values (B, H+1): V of the latents before each step and after the last.

        R_t = r_t + gamma c_t ((1 - lam) V_{t+1} + lam R_{t+1}),   R_H = V_H
    """
    H = rewards.shape[1]
    out = torch.empty_like(rewards)
    nxt = values[:, H]
    for t in reversed(range(H)):
        nxt = rewards[:, t] + gamma * continues[:, t] * ((1 - lam) * values[:, t + 1] + lam * nxt)
        out[:, t] = nxt
    return out


class MLP(nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        mods, d = [], d_in
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            d = hidden
        mods.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class ImagineConfig:
    world_model: Path = Path("runs/wm-1-1/model.safetensors")
    """Frozen world model (model.safetensors of a `lemario train` run)."""
    corpus: Path = Path("runs/corpus-1-1")
    """Real states to start imagination from."""
    out: Path = Path("runs/policy-1-1")
    """Policy run folder (policy.safetensors + .json, metrics.jsonl)."""
    updates: int = 2000
    snapshot_every: int = 0
    """Also save the policy every this many updates, as OUT/snapshots/policy-UUUUUU.safetensors (0: never): its
    score against training length, each snapshot a policy `lemario eval` plays."""
    batch: int = 256
    """Imagined trajectories per update."""
    horizon: int = 15
    gamma: float = 0.97
    lam: float = 0.95
    entropy: float = 3e-3
    """Entropy bonus (advantages are normalized, so this is relative to ~1)."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    slow_critic: float = 0.02
    """EMA rate of the bootstrap critic."""
    hidden: int = 256
    reward: RewardWeights = field(default_factory=lambda: RewardWeights(death_penalty=5 * RETURN_UNIT))
    """The scalar reward in pixels (`lemario.control.reward`): a certain death costs 40 px here."""
    seed: int = 0
    init_from: Path | None = None
    """A policy checkpoint whose actor and critic this one starts from instead of a fresh init (same sizes)."""
    max_episodes: int = 0
    """Read at most this many corpus episodes (0: all)."""
    episodes: Path | None = None
    """A JSON list of corpus file names to start from (the flywheel's replay selection; default: all)."""
    balance_levels: bool = False
    """Start from each level of a multi-level corpus equally often, whatever its share of the frames."""
    death_share: float = 0.0
    """Share of each batch's start states drawn from the `death_window` steps before the corpus's deaths (where its
    players die: more of the policy's practice where play fails); 0: none, every start as above."""
    death_window: int = 24
    """Steps before a death's certainty (the death reward's first doomed frame) that `death_share` draws from."""
    imitate: float = 0.0
    """Weight of self-imitation: the negative log-likelihood of the actions the corpus's flag-reaching episodes took,
    at their encoded real states, added to the actor's loss (`lemario.control.corpus_states`); 0: none."""
    imitate_x: tuple[int, int] = (0, 0)
    """(LO, HI): imitate only the steps at x_pos in [LO, HI) of the episodes that got to HI (or the flag), not every
    step of the flag-reaching ones; (0, 0): those."""
    min_action_share: float = 0.001
    """The policy chooses only actions that took at least this share of the world model's training corpus's steps
    (`lemario.model.world_model.known_actions`); 0: every action, as before issue 21."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'. The saved policy is always loadable on CPU."""
    threads: int = 0
    """torch CPU threads (0: torch's default; the flywheel gives each of its parallel policies a share)."""
    progress: bool = True
    """Show a progress bar (updates, rate, imagined return, entropy)."""
    progress_row: int = 0
    """Screen row of the progress bar (policies trained side by side each draw their own)."""

    def validate(self) -> None:
        if not (0 <= self.death_share <= 1 and self.death_window >= 1):
            given = f"--death-share {self.death_share}, --death-window {self.death_window}"
            raise LemarioError(f"{given}: use a share in [0, 1] and a window >= 1")
        if self.imitate < 0:
            raise LemarioError(f"--imitate {self.imitate}: use a weight >= 0 (0: no self-imitation)")
        lo, hi = self.imitate_x
        if (lo, hi) != (0, 0) and not 0 <= lo < hi:
            raise LemarioError(f"--imitate-x {lo} {hi}: give LO < HI, both >= 0 (or 0 0 for the flag's episodes)")


PRESETS = {
    "tiny": ImagineConfig(updates=20, batch=16, horizon=5, hidden=32, out=Path("runs/policy-tiny")),
    "cpu": ImagineConfig(),
    "gpu": ImagineConfig(updates=20000, batch=1024),
}


class ActorCritic(nn.Module):
    """pi(a|s) and V(s) on world-model states (N, state_dim); the actor starts uniform over the allowed actions
    (`allowed` (A,) bool, None: all; kept in the checkpoint's sidecar, not its tensors), the critic predicts symlog
    returns."""

    def __init__(self, state_dim: int, n_actions: int, hidden: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.actor = MLP(state_dim, n_actions, hidden)
        self.critic = MLP(state_dim, 1, hidden)
        nn.init.zeros_(self.actor.net[-1].weight)  # start uniform
        nn.init.zeros_(self.actor.net[-1].bias)
        allowed = torch.ones(n_actions, dtype=torch.bool) if allowed is None else allowed.bool()
        self.register_buffer("allowed", allowed, persistent=False)

    def dist(self, s: torch.Tensor) -> torch.distributions.Categorical:
        logits = self.actor(s).masked_fill(~self.allowed, torch.finfo(s.dtype).min)  # (N, A)
        return torch.distributions.Categorical(logits=logits)

    def value(self, s: torch.Tensor) -> torch.Tensor:
        return symexp(self.critic(s)[..., 0])


@torch.no_grad()
def imagine(
    world_model,
    ac: ActorCritic,
    start: torch.Tensor,
    past: torch.Tensor,
    prev: torch.Tensor,
    horizon: int,
    generator: torch.Generator,
):
    """Roll the policy forward in the world model from start latents (B, c, D), the c-1 actions between them and
    prev (B,) the action before the first. Returns states (B, H+1, state_dim) (the start's last and H imagined),
    actions (B, H), reward-head outputs (B, H, 4) (3 from a model without the flag head)."""
    seq = list(start.unbind(1))
    before = [prev, *past.unbind(1)]  # before[j]: the action before latent j
    h = world_model.history
    states = [world_model.state(seq[-1], before[-1])]
    for _ in range(horizon):
        a = torch.multinomial(ac.dist(states[-1]).probs, 1, generator=generator)[:, 0]  # (B,)
        lo = max(0, len(seq) - h)
        window = torch.stack(seq[lo:], dim=1)  # (B, <=h, D)
        nxt = world_model.predict(window, torch.stack([*before[lo + 1 :], a], dim=1), before[lo])[:, -1]
        seq.append(nxt)
        before.append(a)
        states.append(world_model.state(nxt, a))
    actions = torch.stack(before[-horizon:], dim=1)  # (B, H)
    out = world_model.reward(torch.stack(seq[-horizon:], dim=1), actions)
    return torch.stack(states, dim=1), actions, out


def actor_critic_loss(
    ac: ActorCritic,
    slow: ActorCritic,
    s: torch.Tensor,
    actions: torch.Tensor,
    reward_out: torch.Tensor,
    cfg: ImagineConfig,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Losses of one imagined batch (states s (B, H+1, F)); returns (loss, metrics, the new 5-95% return range)."""
    r = decode_reward(reward_out)  # (B, H, 4): px, points, P(death), P(flag)
    rewards = scalar_reward(r, cfg.reward) / RETURN_UNIT  # (B, H), in the critic's unit
    continues = 1 - ends(r)
    with torch.no_grad():
        values = slow.value(s)  # (B, H+1)
        returns = lambda_returns(rewards, values, continues, cfg.gamma, cfg.lam)  # (B, H)
        # weight of each step: the probability the imagined episode is still running there
        alive = torch.cumprod(torch.cat([torch.ones_like(continues[:, :1]), continues[:, :-1]], dim=1), dim=1)
        spread = torch.quantile(returns, 0.95) - torch.quantile(returns, 0.05)
    critic_out = ac.critic(s[:, :-1])[..., 0]  # (B, H) symlog values
    critic_loss = (alive * (critic_out - symlog(returns)).square()).mean()
    dist = ac.dist(s[:, :-1])
    baseline = symexp(critic_out.detach())
    advantage = (returns - baseline) / scale.clamp_min(1.0)
    logp = dist.log_prob(actions)
    entropy = dist.entropy()
    actor_loss = -(alive * (logp * advantage + cfg.entropy * entropy)).mean()
    metrics = {
        "imag/reward": rewards.mean().item(),
        "imag/return": returns.mean().item(),
        "imag/death": r[..., 2].mean().item(),
        "imag/flag": r[..., 3].mean().item(),
        "imag/progress_px": r[..., 0].mean().item(),
        "loss/actor": actor_loss.item(),
        "loss/critic": critic_loss.item(),
        "policy/entropy": entropy.mean().item(),
        "policy/return_scale": float(scale),
    }
    return actor_loss + critic_loss, metrics, spread


def train_policy(
    world_model,
    starts_fn,
    cfg: ImagineConfig,
    n_actions: int,
    log=None,
    allowed: torch.Tensor | None = None,
    snapshot=None,
    imitate_fn=None,
) -> ActorCritic:
    """Train an actor-critic in imagination. starts_fn(rng) -> (start latents (B, c, D), the actions between them
    (B, c-1), the action before the first (B,)), on the world model's device; allowed (A,) bool: the actions the
    policy may choose (None: all); snapshot(updates, ac) is called every `cfg.snapshot_every` updates before the
    last; imitate_fn(rng) -> (real states (B, F), the actions taken there (B,)) adds `cfg.imitate` x their negative
    log-likelihood to the loss (None: no imitation)."""
    device = module_device(world_model)
    torch.manual_seed(cfg.seed)
    ac = ActorCritic(world_model.state_dim, n_actions, cfg.hidden, allowed).to(device)
    if cfg.init_from is not None:  # a continued policy: the checkpoint's weights, this run's action mask
        checkpoint.load_state(ac, checkpoint.load(cfg.init_from, kind="policy")[0], cfg.init_from)
    slow = copy.deepcopy(ac).requires_grad_(False)
    opt = torch.optim.Adam(
        [{"params": ac.actor.parameters(), "lr": cfg.actor_lr}, {"params": ac.critic.parameters(), "lr": cfg.critic_lr}]
    )
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    scale = torch.tensor(1.0, device=device)
    bar = progress_bar(
        range(cfg.updates),
        progress=cfg.progress,
        unit="upd",
        desc=f"policy s{cfg.seed}",
        position=cfg.progress_row,
    )
    for i in bar:
        start, past, prev = starts_fn(rng)
        s, actions, reward_out = imagine(world_model, ac, start, past, prev, cfg.horizon, generator)
        loss, metrics, spread = actor_critic_loss(ac, slow, s, actions, reward_out, cfg, scale)
        if imitate_fn is not None:
            nll, im = imitation_loss(ac, *imitate_fn(rng))
            loss, metrics = loss + cfg.imitate * nll, {**metrics, **im}
        scale = 0.99 * scale + 0.01 * spread if i else spread.clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(ac.parameters(), 10.0)
        opt.step()
        with torch.no_grad():
            for p, q in zip(slow.parameters(), ac.parameters()):
                p.lerp_(q, cfg.slow_critic)
        bar.set_postfix(
            {"return": f"{metrics['imag/return']:.2f}", "entropy": f"{metrics['policy/entropy']:.2f}"}, refresh=False
        )
        if log and (i + 1) % 10 == 0:
            log(i + 1, metrics)
        if snapshot and cfg.snapshot_every and (i + 1) % cfg.snapshot_every == 0 and i + 1 < cfg.updates:
            snapshot(i + 1, ac)
    return ac


def run_imagine(cfg: ImagineConfig) -> Path:
    """Train one policy in the frozen world model; returns the path of policy.safetensors."""
    cfg.validate()
    device = resolve_device(cfg.device)
    model, wm_meta = load_world_model(cfg.world_model, device)
    check_writable(cfg.out)
    with writer_lock(cfg.out), torch_threads(cfg.threads):
        files = read_episode_list(cfg.episodes)
        buffer = EpisodeBuffer.load(  # start states: fewer episodes do no harm, so unreadable ones are left out
            cfg.corpus, max_episodes=cfg.max_episodes or None, files=files, skip_unreadable=True
        )
        metrics_path = cfg.out / runlog.NAME
        metrics_path.unlink(missing_ok=True)  # a policy is trained in one go: an interrupted attempt's log goes
        shutil.rmtree(cfg.out / "snapshots", ignore_errors=True)  # and its snapshots
        t0 = time.time()

        def log(step, m):
            runlog.append_row(metrics_path, {"update": step, "time": round(time.time() - t0, 2), **m})

        allowed = known_actions(wm_meta, cfg.min_action_share)

        def save(path: Path, ac: ActorCritic, updates: int) -> None:
            sidecar = {
                "kind": "policy",
                "config": {
                    "latent_dim": model.cfg.latent_dim,
                    "state_dim": model.state_dim,
                    "n_actions": model.cfg.n_actions,
                    "hidden": cfg.hidden,
                    "actions": None if allowed is None else allowed.nonzero()[:, 0].tolist(),
                },
                "world_model": str(cfg.world_model),
                "world_model_commit": wm_meta.get("git_commit"),
                "train_config": as_json(cfg),
                "updates": updates,
                "imitated_steps": imitated,
                "seconds": round(time.time() - t0, 1),
            }
            checkpoint.save(path, ac.state_dict(), sidecar)

        def snapshot(updates: int, ac: ActorCritic) -> None:
            save(cfg.out / "snapshots" / f"policy-{updates:06d}.safetensors", ac, updates)

        starts = corpus_starts(model, buffer, cfg.batch, cfg.balance_levels, (cfg.death_share, cfg.death_window))
        imitate, imitated = (
            imitation_batches(model, buffer, cfg.batch, allowed, cfg.imitate_x) if cfg.imitate else (None, 0)
        )
        if cfg.imitate and imitate is None:
            print(f"lemario imagine: --imitate {cfg.imitate}: {cfg.corpus} has no step to imitate, no imitation")
        ac = train_policy(model, starts, cfg, model.cfg.n_actions, log, allowed, snapshot, imitate)
        path = cfg.out / "policy.safetensors"
        save(path, ac, cfg.updates)
    return path


def imagine_main(cfg: ImagineConfig) -> None:
    print(f"policy saved to {run_imagine(cfg)}")


def policy_world_model(path: Path, meta: dict) -> Path:
    """The world model a policy checkpoint names: relative to the policy's folder first, else as written."""
    wm_path = Path(meta["world_model"])
    if not wm_path.is_absolute() and (path.parent / wm_path).exists():
        return path.parent / wm_path
    return wm_path


def load_policy(path: Path):
    """(ActorCritic, its world model, sidecar) of a policy checkpoint."""
    tensors, meta = checkpoint.load(path, kind="policy")
    c = meta["config"]
    state_dim = c.get("state_dim", c["latent_dim"])  # policies before the previous action: the latent alone
    allowed = None  # policies before issue 21's mask choose among every action
    if c.get("actions") is not None:
        allowed = torch.zeros(c["n_actions"], dtype=torch.bool)
        allowed[c["actions"]] = True
    ac = ActorCritic(state_dim, c["n_actions"], c["hidden"], allowed)
    checkpoint.load_state(ac, tensors, Path(path))
    wm_path = policy_world_model(Path(path), meta)
    model, _ = load_world_model(wm_path)
    if model.state_dim != state_dim:
        raise LemarioError(
            f"policy {path} expects states of {state_dim} dims, its world model {wm_path} gives {model.state_dim}: "
            "train the policy on this world model"
        )
    return ac.eval(), model, meta
