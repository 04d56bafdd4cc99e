"""Control: the CEM optimizer on known problems, the evaluation harness end to end, bad agent specs."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lemario.control.imagination import RETURN_UNIT, ImagineConfig
from lemario.control.planner import (
    LatentPlanner,
    PlannerConfig,
    cem,
    fold_batchnorm,
    prior_probs,
    rollout_shared,
)
from lemario.control.policies import make_policy
from lemario.control.reward import RewardWeights, scalar_reward, survival_weighted
from lemario.core import checkpoint
from lemario.core.device import precision_dtype
from lemario.core.errors import LemarioError
from lemario.games.mario.actions import action_set
from lemario.games.mario.env import EnvConfig
from lemario.model.encoders import Projector
from lemario.model.world_model import ModelConfig, WorldModel
from lemario.play.evaluate import EVAL_SEED_BASE, EvalConfig, evaluate, format_summary

from conftest import run_cli_many


def test_cem_finds_a_hidden_sequence():
    target = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])  # one of 10 actions per step: 10^10 sequences

    def score(seqs):
        distance = (seqs - target).abs()  # (N, H)
        return -distance.sum(-1).float(), distance

    cfg = PlannerConfig(horizon=10, samples=256, elites=25, iterations=12, smoothing=0.1)
    best, value, extra, probs = cem(score, torch.full((10, 10), 0.1), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(best, target) and value == 0 and torch.equal(extra, torch.zeros(10, dtype=torch.int64))
    assert (probs.argmax(1) == target).all() and probs.max(1).values.min() > 0.8


def test_cem_drives_a_quadratic_cost_to_its_minimum():
    # actions are numbers 0..20, the cost (sum a_t - 7)^2 is minimal at a_t = 7
    def score(seqs):
        return -((seqs.float() - 7) ** 2).sum(-1), None

    cfg = PlannerConfig(horizon=5, samples=200, elites=20, iterations=8)
    best, value, _, _ = cem(score, torch.full((5, 21), 1 / 21), cfg, torch.Generator().manual_seed(1))
    assert value > -1 and (best - 7).abs().max() <= 1


@pytest.mark.parametrize("best_row", [0, 2])
def test_cem_keeps_a_given_candidate_when_it_is_best(best_row):
    keep = torch.tensor([[2, 2, 2], [3, 3, 3], [5, 7, 5]])  # e.g. the previous plan, then the policy's sequences
    cfg = PlannerConfig(horizon=3, samples=16, elites=4, iterations=1)
    best, _, _, _ = cem(
        lambda s: ((s == keep[best_row]).all(-1).float(), None),
        torch.full((3, 12), 1 / 12),
        cfg,
        torch.Generator().manual_seed(0),
        keep,
    )
    assert torch.equal(best, keep[best_row])


def test_the_covering_collector_takes_every_action_the_biased_one_never_does():
    never = [5, 7, 8, 9, 10, 11]  # A, left+A, left+B, left+A+B, down, up: no biased macro holds them
    played = {}
    for name in ("biased", "covering"):
        policy = make_policy(name, "complex", np.random.default_rng(0))
        played[name] = np.array([policy.act({}) for _ in range(20000)])
    biased, covering = (np.bincount(played[n], minlength=12) for n in ("biased", "covering"))
    assert biased[never].sum() == 0 and (covering > 0).all()
    # 15% of macros hold a uniform action for 1-8 steps (mean 4.5) against the biased macros' mean 6.45 steps:
    # 0.675 / (0.675 + 0.85 * 6.45) = 11% of the steps, half of them on the six actions biased play never takes
    assert 0.04 < covering[never].sum() / 20000 < 0.07, covering
    held = played["covering"][1:] == played["covering"][:-1]
    assert held[np.isin(played["covering"][1:], never)].mean() > 0.5, "those actions are held for a few steps too"


def test_biased_prior_favours_right():
    actions = action_set("complex")
    p = prior_probs(PlannerConfig(horizon=4), actions)
    assert p.shape == (4, 12) and torch.allclose(p.sum(1), torch.ones(4))
    right = [i for i, a in enumerate(actions) if "right" in a]
    assert p[0, right].sum() > 0.5


def test_the_planner_never_samples_an_action_it_may_not_choose():
    actions = action_set("complex")
    allowed = torch.tensor([i in (0, 1, 2, 3, 4, 6) for i in range(12)])
    p = prior_probs(PlannerConfig(horizon=4, prior="uniform"), actions, allowed)
    assert torch.allclose(p[:, allowed], torch.full((4, 6), 1 / 6)) and (p[:, ~allowed] == 0).all()
    cfg = PlannerConfig(horizon=4, samples=64, elites=8, iterations=3)
    seen = []

    def score(seqs):  # prefers action 9 above all: the score a model would flatter an action it never saw with
        seen.append(seqs)
        return (seqs == 9).float().sum(-1) + (seqs == 1).float().sum(-1) * 0.5, None

    best = cem(score, p, cfg, torch.Generator().manual_seed(0))
    assert allowed[torch.cat(seen)].all() and torch.equal(best.seq, torch.ones(4, dtype=torch.int64))


@pytest.mark.parametrize("predictor", ["mlp", "transformer"])
@pytest.mark.parametrize("prev_action", [False, True])
def test_shared_prefix_rollout_equals_rolling_out_every_sequence(predictor, prev_action):
    torch.manual_seed(0)
    model = WorldModel(
        ModelConfig(
            latent_dim=16,
            encoder_dim=32,
            projector_hidden=32,
            pred_hidden=32,
            pred_depth=1,
            reward_hidden=16,
            predictor=predictor,
            history=3,
            prev_action=prev_action,
        )
    ).eval()
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(0, 3, (50, 6), generator=g)  # 3 of the 12 actions: many shared prefixes
    seqs[7] = seqs[8]
    for c in (1, 2, 4):  # contexts shorter than and longer than a transformer's history
        context, past = torch.randn(1, c, 16, generator=g), torch.randint(0, 12, (1, c), generator=g)
        w = min(c, model.history)
        with torch.no_grad():
            want = model.rollout(
                context[:, -w:].expand(50, -1, -1),
                torch.cat([past[:, c - w + 1 :].expand(50, -1), seqs], 1),
                past[:, c - w].expand(50),
            )  # (50, 6, D)
            for pad in (1, 32):
                torch.testing.assert_close(rollout_shared(model, context, past, seqs, pad), want)


def test_folded_batchnorm_projects_like_the_eval_mode_projector():
    torch.manual_seed(0)
    proj = Projector(8, 16, 4)
    bn = proj.net[1]
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.normal_(), bn.bias.data.normal_()
    proj.eval()
    x = torch.randn(10, 8)
    want = proj(x)
    with torch.no_grad():
        fold_batchnorm(proj.net)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in proj.modules())
    torch.testing.assert_close(proj(x), want)


def test_bf16_planning_ranks_sequences_like_fp32():
    torch.manual_seed(0)
    model = WorldModel(
        ModelConfig(latent_dim=32, encoder_dim=64, projector_hidden=64, pred_hidden=64, pred_depth=2, reward_hidden=32)
    )
    model.eval()
    actions = action_set("complex")
    p32, p16 = (LatentPlanner(model, PlannerConfig(precision=p), actions) for p in ("fp32", "bf16"))
    assert p16.rollout_model is not model and next(p16.rollout_model.predictor.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the agent's own model is untouched
    seqs = torch.randint(0, 12, (256, 15), generator=torch.Generator().manual_seed(1))
    context, past = torch.randn(1, 1, 32), torch.zeros(1, 1, dtype=torch.int64)
    (s32, _), (s16, _) = p32.objective(context, past)(seqs), p16.objective(context, past)(seqs)
    assert s16.dtype == torch.float32 and s32.std() > 0
    assert np.corrcoef(s32, s16)[0, 1] > 0.99
    assert len(set(s32.topk(32).indices.tolist()) & set(s16.topk(32).indices.tolist())) >= 24
    assert (
        precision_dtype("bf16", torch.device("cpu")) == torch.bfloat16
        and precision_dtype("fp32", torch.device("cpu")) == torch.float32
    )
    seq, value, rewards = p32.plan(context, past, torch.Generator().manual_seed(2))
    _, again = p32.rewards(context, past, seq[None])
    torch.testing.assert_close(rewards, again[0], rtol=1e-4, atol=1e-4)  # those of its best sequence (batched vs alone)
    assert value == pytest.approx(float(p32.objective(context, past)(seq[None])[0][0]), rel=1e-4)


def test_harness_rows_and_determinism(tmp_path):
    cfg = EvalConfig(
        agents=("biased", "random"), episodes=3, workers=1, env=EnvConfig(max_steps=200), out=tmp_path / "a"
    )
    s = evaluate(cfg)
    rows = [json.loads(x) for x in (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["agent"] for r in rows} == {"biased", "random"}
    assert [r["eval_seed"] for r in rows[:3]] == [EVAL_SEED_BASE + i for i in range(3)]
    for r in rows:
        assert r["end"] in {"enemy", "pit", "time", "step_limit", "flag"} and r["max_x"] >= r["final_x"] >= 0
        assert len(r["actions"]) == 12 and sum(r["actions"]) == r["steps"]  # steps per action of the complex set
    biased = np.sum([r["actions"] for r in rows if r["agent"] == "biased"], axis=0)
    assert biased[[5, 7, 8, 9, 10, 11]].sum() == 0 < biased[[1, 2, 3, 4]].sum()  # its macros never press these
    agg = s["per_agent"]["biased"]
    assert agg["mean_max_x"] == pytest.approx(np.mean([r["max_x"] for r in rows if r["agent"] == "biased"]))
    assert s["kseed"] == {}, "biased and random are two methods, not two seeds of one"
    mine = [r for r in rows if r["agent"] == "biased" and r["end"] != "flag"]
    assert sum(sum(by_x.values()) for by_x in s["ends_at"]["biased"].values()) == len(mine)
    assert f"biased: where episodes end (final x): {min(r['end'] for r in mine)} " in format_summary(s)
    again = evaluate(
        EvalConfig(agents=("biased", "random"), episodes=3, workers=2, env=EnvConfig(max_steps=200), out=tmp_path / "b")
    )
    assert again["per_agent"] == s["per_agent"], "same eval seeds, same results, whatever the worker count"


def test_interrupted_eval_resumes_with_the_episodes_it_lacks(tmp_path, monkeypatch):
    import lemario.play.evaluate as E

    cfg = EvalConfig(
        agents=("biased", "random"), episodes=3, workers=1, env=EnvConfig(max_steps=120), out=tmp_path / "e"
    )
    full = evaluate(EvalConfig(**{**cfg.__dict__, "out": tmp_path / "full"}))
    real_play, played = E.play, []

    def crashing_play(env, agent, seed):
        if len(played) == 5:
            raise KeyboardInterrupt  # killed during the sixth and last episode
        played.append(seed)
        return real_play(env, agent, seed)

    monkeypatch.setattr(E, "play", crashing_play)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    assert not (cfg.out / "summary.json").exists()
    lines = (cfg.out / E.PARTIAL).read_text().splitlines()
    header = json.loads(lines[0])
    del header["resume_key"]["planner"]["value"]  # written by a lemario without that option: it played the default
    (cfg.out / E.PARTIAL).write_text(
        "\n".join([json.dumps(header)] + lines[1:]) + '\n{"agent": "random", "epis'
    )  # + a torn line
    with pytest.raises(LemarioError, match="env.max_steps: 120 -> 200"):
        evaluate(replace(cfg, env=EnvConfig(max_steps=200)))
    played.clear()
    monkeypatch.setattr(E, "play", lambda env, agent, seed: played.append(seed) or real_play(env, agent, seed))
    resumed = evaluate(EvalConfig(**{**cfg.__dict__, "workers": 2}))  # the worker count may change
    assert played == [EVAL_SEED_BASE + 2], "only the missing episode is played"
    assert resumed["per_agent"] == full["per_agent"]
    assert not (cfg.out / E.PARTIAL).exists() and len((cfg.out / "episodes.jsonl").read_text().splitlines()) == 6


def test_bad_agent_specs(tmp_path):
    with pytest.raises(LemarioError, match="unknown agent"):
        evaluate(EvalConfig(agents=("smart",), episodes=1, workers=1, out=tmp_path / "x"))
    with pytest.raises(LemarioError, match="needs a checkpoint"):
        evaluate(EvalConfig(agents=("planner",), episodes=1, workers=1, out=tmp_path / "x"))
    planner = (
        ("precision", "fp8", "unknown planner precision 'fp8'"),
        ("prior", "left", "unknown planner prior"),
        ("elites", "512", "elites <= samples"),
        ("value", "/nonexistent/policy.safetensors", "no policy checkpoint"),
    )
    cases = {"checkpoint": ["eval", "planner:/nonexistent/model.safetensors", "--episodes", "1"]}
    for option, value, _ in planner:
        cases[option] = [
            "eval",
            "biased",
            "--episodes",
            "1",
            f"--planner.{option}",
            value,
            "--out",
            str(tmp_path / option),
        ]
    (tmp_path / "logs").mkdir()
    runs = run_cli_many(cases, tmp_path / "logs")
    for name, message in (("checkpoint", "no checkpoint"), *((option, message) for option, _, message in planner)):
        r = runs[name]
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- imagination actor-critic ----------------------------------------------------------------------------------
from lemario.control.corpus_states import imitation_batches, imitation_loss, success_windows  # noqa: E402
from lemario.control.exploring import ExploringAgent, end_windows  # noqa: E402
from lemario.control.imagination import ActorCritic, imagine, lambda_returns, symexp, symlog, train_policy  # noqa: E402


def test_symlog_symexp_round_trip():
    x = torch.tensor([-1e6, -100.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 100.0, 1e6])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert symlog(torch.tensor(0.0)) == 0 and torch.allclose(symlog(torch.tensor(1.0)), torch.log(torch.tensor(2.0)))


def test_lambda_returns_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 1.0, 1.5, 4.0]])
    c = torch.tensor([[1.0, 0.5, 1.0]])
    g, lam = 0.9, 0.8
    R2 = 3 + g * 1.0 * ((1 - lam) * 4.0 + lam * 4.0)  # R_H = V_H
    R1 = 2 + g * 0.5 * ((1 - lam) * 1.5 + lam * R2)
    R0 = 1 + g * 1.0 * ((1 - lam) * 1.0 + lam * R1)
    assert torch.allclose(lambda_returns(r, v, c, g, lam), torch.tensor([[R0, R1, R2]]))
    # lambda = 1 with no deaths: the discounted sum plus the discounted last value
    full = lambda_returns(r, v, torch.ones(1, 3), 0.9, 1.0)
    assert full[0, 0].item() == pytest.approx(1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 4.0)


def test_imagined_states_carry_the_action_before_each_latent():
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=8, encoder_dim=16, projector_hidden=16, pred_hidden=16, pred_depth=1, n_actions=4)
    model = WorldModel(replace(cfg, reward_hidden=8, prev_action=True)).eval()
    ac = ActorCritic(model.state_dim, 4, 16)
    prev = torch.randint(0, 4, (6,))
    s, actions, out = imagine(model, ac, torch.randn(6, 1, 8), torch.zeros(6, 0, dtype=torch.int64), prev, 5, None)
    assert s.shape == (6, 6, 12) and actions.shape == (6, 5) and out.shape == (6, 5, 4)
    assert torch.equal(s[..., 8:].argmax(-1), torch.cat([prev[:, None], actions], dim=1)), (
        "one-hot of the action before"
    )
    with torch.no_grad():
        want = model.reward(s[:, 1:, :8], actions)  # each imagined latent with the action that led to it
    torch.testing.assert_close(out, want)


class _Remembers:
    """An agent that records what it is told the env took."""

    def reset(self, seed):
        self.told = []

    def act(self, obs, info):
        return 0

    def executed(self, action):
        self.told.append(action)


def test_an_ensemble_samples_the_geometric_mean_of_its_members():
    from lemario.control.agents import ensemble_probs

    def cat(probs):
        return torch.distributions.Categorical(probs=torch.tensor([probs]))

    one = cat([0.7, 0.2, 0.1])
    assert torch.equal(ensemble_probs([one]), one.probs), "a single policy plays as itself"
    assert torch.allclose(ensemble_probs([one, one, one]), one.probs), "copies of one policy play as that policy"
    assert torch.allclose(
        ensemble_probs([cat([0.9, 0.1, 0.0]), cat([0.1, 0.9, 0.0])]), torch.tensor([[0.5, 0.5, 0]]), atol=1e-6
    )
    # the first action: sqrt(0.8 * 0.2); each other one is masked in one member (the actor's mask): a veto
    masked = torch.finfo(torch.float32).min
    vetoes = [torch.tensor([[0.8, 0.2, 0.0]]).log(), torch.tensor([[0.2, 0.0, 0.8]]).log()]
    vetoes = [torch.distributions.Categorical(logits=v.clamp(min=masked)) for v in vetoes]
    assert torch.allclose(ensemble_probs(vetoes), torch.tensor([[1.0, 0, 0]]))


def test_exploration_tells_the_agent_what_the_env_took():
    inner = _Remembers()
    agent = ExploringAgent(inner, 1.0, "complex")
    agent.reset(3)
    taken = [agent.act(None, {}) for _ in range(20)]
    assert inner.told == [a for a in taken if a != 0], "every overridden step is reported, none of its own"


def test_exploration_starts_only_inside_its_x_windows():
    agent = ExploringAgent(_Remembers(), 1.0, "complex", (100, 200, 400, 500))
    agent.reset(3)
    for x in (0, 99, 200, 399, 500, 900):  # every step would explore (epsilon 1), none of these x is in a window
        assert agent.act(None, {"x_pos": x}) == 0 and agent.explored == 0, f"a macro started at x {x}"
    agent.act(None, {"x_pos": 100})  # the window's first x: a macro starts
    started = len(agent.queue) + 1
    while agent.queue:  # and plays out whatever the x
        agent.act(None, {"x_pos": 900})
    assert agent.explored == started
    agent.act(None, {"x_pos": 450})
    assert agent.explored == started + 1, "the second window explores too"


def test_end_windows_lie_before_the_commonest_ending_places():
    ends = [1510, 1590, 1650, 2475, 2480, 2490, 700, 150]  # bins of 100 px: 15 twice, 24 three times, 16, 7, 1 once
    assert end_windows(ends, 2) == (1300, 1600, 2200, 2500), "the two commonest, in order of x"
    assert end_windows(ends, 3) == (0, 200, 1300, 1600, 2200, 2500), "a tie goes to the earliest place"
    assert end_windows([150], 1) == (0, 200), "a window does not start before x 0"
    assert end_windows([], 3) == ()


class _LineWorld(torch.nn.Module):
    """A latent MDP with a known optimum: action 1 moves right (reward 1 per step), action 3 kills, others idle."""

    history, state_dim = 1, 4

    class cfg:  # noqa: N801 - mimics WorldModel.cfg
        latent_dim, frame_stack = 4, 1

    def state(self, z, prev):
        return z

    def predict(self, z, actions, prev):  # (B, 1, 4), (B, 1), (B,) -> (B, 1, 4)
        a = actions[:, -1]
        nxt = z[:, -1].clone()
        nxt[:, 0] += (a == 1).float()
        nxt[:, 1] = (a == 1).float() * 8.0  # progress channel, PROGRESS_SCALE px
        nxt[:, 2] = torch.where(a == 3, 10.0, -10.0)  # death logit
        return nxt[:, None]

    def reward(self, z, prev):  # (..., 4) -> (..., 3): progress / 8, score / 100, death logit (no flag head)
        return torch.stack([z[..., 1] / 8.0, torch.zeros_like(z[..., 0]), z[..., 2]], dim=-1)


def test_actor_critic_learns_the_optimal_action():
    world = _LineWorld()

    def starts(rng):
        z = torch.zeros(64, 1, 4)
        z[:, 0, 0] = torch.from_numpy(rng.normal(size=64)).float()
        return z, torch.zeros(64, 0, dtype=torch.int64), torch.zeros(64, dtype=torch.int64)

    cfg = ImagineConfig(
        updates=150, batch=64, horizon=8, hidden=32, entropy=1e-3, actor_lr=3e-3, critic_lr=3e-3, progress=False
    )
    ac = train_policy(world, starts, cfg, n_actions=4)
    probs = ac.dist(torch.zeros(16, 4)).probs.mean(0)
    assert probs[1] > 0.8, probs
    assert probs[3] < 0.05, "the deadly action is avoided"


def test_a_policy_continued_from_a_checkpoint_starts_where_it_ended(tmp_path):
    """--init-from: zero updates return the checkpoint's policy exactly, a few keep its preference (a fresh start
    after as few is near uniform); a checkpoint of another size is a clear error."""
    world = _LineWorld()

    def starts(rng):
        return torch.zeros(64, 1, 4), torch.zeros(64, 0, dtype=torch.int64), torch.zeros(64, dtype=torch.int64)

    cfg = ImagineConfig(updates=150, batch=64, horizon=8, hidden=32, actor_lr=3e-3, critic_lr=3e-3, progress=False)
    trained = train_policy(world, starts, cfg, n_actions=4)
    path = tmp_path / "policy.safetensors"
    checkpoint.save(path, trained.state_dict(), {"kind": "policy"})
    s = torch.zeros(16, 4)
    same = train_policy(world, starts, replace(cfg, updates=0, init_from=path), n_actions=4)
    assert torch.equal(same.dist(s).probs, trained.dist(s).probs)
    assert torch.equal(same.value(s), trained.value(s)), "the critic comes with it"
    few = replace(cfg, updates=3, seed=1)
    assert train_policy(world, starts, replace(few, init_from=path), 4).dist(s).probs.mean(0)[1] > 0.8
    assert train_policy(world, starts, few, 4).dist(s).probs.mean(0)[1] < 0.5
    with pytest.raises(LemarioError, match="does not fit"):
        train_policy(world, starts, replace(cfg, hidden=16, init_from=path), n_actions=4)


def test_actor_critic_never_learns_an_action_it_may_not_choose():
    """The line world's best action (1) forbidden: the policy puts exactly 0 on it, still avoids the deadly one,
    and its entropy stays finite."""

    def starts(rng):
        return torch.zeros(64, 1, 4), torch.zeros(64, 0, dtype=torch.int64), torch.zeros(64, dtype=torch.int64)

    cfg = ImagineConfig(updates=60, batch=64, horizon=8, hidden=32, actor_lr=3e-3, critic_lr=3e-3, progress=False)
    ac = train_policy(_LineWorld(), starts, cfg, n_actions=4, allowed=torch.tensor([True, False, True, True]))
    dist = ac.dist(torch.zeros(16, 4))
    assert (dist.probs[:, 1] == 0).all() and dist.probs[:, 3].mean() < 0.1, dist.probs.mean(0)
    assert torch.isfinite(dist.entropy()).all()


def test_module_device_keeps_no_module_alive_and_the_cpu_check_is_cached():
    """module_device reads the parameters each call (no cache holding every world model it saw); the CPU's bf16 check,
    which reads /proc/cpuinfo, is read once."""
    import gc
    import weakref

    from lemario.core.device import cpu_has_native_bf16, module_device

    m = torch.nn.Linear(2, 2)
    ref = weakref.ref(m)
    assert module_device(m) == torch.device("cpu") and module_device(torch.nn.ReLU()) == torch.device("cpu")
    del m
    gc.collect()
    assert ref() is None
    assert cpu_has_native_bf16() == cpu_has_native_bf16() and cpu_has_native_bf16.cache_info().hits >= 1


def test_bf16_flags():
    """Hardware bf16 is AMX's tiles or AVX-512 BF16 (an AMD EPYC's flags), never AVX-512 alone or a name's prefix."""
    from lemario.core.device import bf16_in_flags

    assert bf16_in_flags("fpu sse2 avx2 avx512f amx_bf16 amx_tile")
    assert bf16_in_flags("fpu avx2 avx512f avx512_vnni avx512_bf16 vaes")
    assert not bf16_in_flags("fpu avx2 avx512f avx512_vnni avx512_fp16")
    assert not bf16_in_flags("fpu amx_bf16x avx512_bf16_extra") and not bf16_in_flags("")


def test_imitation_loss_by_hand():
    """A uniform actor: the real actions' mean negative log-likelihood is log 4; its likeliest action is the first."""
    ac = ActorCritic(4, 4, 8)
    for p in ac.actor.parameters():
        torch.nn.init.zeros_(p)
    nll, m = imitation_loss(ac, torch.randn(10, 4), torch.tensor([0] * 5 + [2] * 5))
    assert nll.item() == pytest.approx(np.log(4)) and m["imitate/agree"] == pytest.approx(0.5)


class _FrameWorld(_LineWorld):
    """The line world with an encoder: a frame's latent carries its pixel value (the frame's index below)."""

    history = 2

    def encode(self, obs, level):  # (B, c, 1, 1, 1) uint8 -> (B, c, 4)
        z = torch.zeros(*obs.shape[:2], 4)
        z[..., 0] = obs[:, :, -1, 0, 0].float()
        return z


def test_self_imitation_draws_the_flag_episodes_steps_the_policy_may_take():
    """Two episodes of 6 frames, the second reaching the flag; windows of 2 frames imitate their last frame's action:
    those of the flag episode (not its last frame, which has none), less the forbidden action 3's."""
    from lemario.data.buffer import EpisodeBuffer
    from lemario.games.mario.ram import LABELS

    labels = np.zeros((12, len(LABELS)), np.int32)
    labels[11, LABELS.index("flag_get")] = 1
    starts = np.array([0, 6])
    buf = EpisodeBuffer(
        frames=np.arange(12, dtype=np.uint8)[:, None, None],
        actions=np.array([1, 1, 1, 1, 1, -1, 2, 3, 2, 3, 2, -1]),
        rewards=np.zeros((12, 4), np.float32),
        labels=labels,
        episode_start=np.repeat(starts, 6),
        starts=starts,
        lengths=np.array([6, 6]),
        files=["e0", "e1"],
        action_set="complex",
    )
    assert buf.flagged(np.arange(12)).tolist() == [False] * 6 + [True] * 6
    assert success_windows(buf, 2).tolist() == [6, 7, 8, 9]  # last frames 7-10
    allowed = torch.tensor([True, True, True, False])
    assert success_windows(buf, 2, allowed).tolist() == [7, 9]
    draw, steps = imitation_batches(_FrameWorld(), buf, 32, allowed)
    s, a = draw(np.random.default_rng(0))
    assert steps == 2 and (a == 2).all() and set(s[:, 0].tolist()) == {8.0, 10.0}
    # a stretch of the level: x_pos 0..5 in the first episode (which never flags), 10..15 in the second
    buf.labels[:, LABELS.index("x_pos")] = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert buf.passed(np.arange(12), 5).tolist() == [True] * 12 and buf.passed(np.array([0]), 6).tolist() == [False]
    assert success_windows(buf, 2, x=(2, 5)).tolist() == [1, 2, 3]  # x 2-4 of the episode that got to 5, not 5
    assert success_windows(buf, 2, x=(2, 6)).tolist() == [], "the first episode never got to 6"
    assert success_windows(buf, 2, allowed, x=(11, 16)).tolist() == [7, 9]  # the flag episode, action 3 left out
    buf.labels[11, LABELS.index("flag_get")] = 0
    assert success_windows(buf, 2, x=(11, 16)).tolist() == [], "not flagged and never at 16"
    buf.labels[11] = 0
    assert imitation_batches(_FrameWorld(), buf, 32) == (None, 0), "no flag-reaching episode: no imitation"


def test_self_imitation_pulls_the_policy_to_the_actions_that_reached_the_flag():
    """The line world rewards action 1; successes that all took action 2, imitated with a large weight, make 2 the
    policy's choice, which the same training without them does not."""

    def starts(rng):
        return torch.zeros(64, 1, 4), torch.zeros(64, 0, dtype=torch.int64), torch.zeros(64, dtype=torch.int64)

    def successes(rng):
        return torch.zeros(64, 4), torch.full((64,), 2)

    cfg = ImagineConfig(updates=60, batch=64, horizon=8, hidden=32, actor_lr=3e-3, critic_lr=3e-3, progress=False)
    imitating = train_policy(_LineWorld(), starts, replace(cfg, imitate=10.0), 4, imitate_fn=successes)
    plain = train_policy(_LineWorld(), starts, cfg, 4)
    s = torch.zeros(16, 4)
    assert imitating.dist(s).probs.mean(0)[2] > 0.6 > plain.dist(s).probs.mean(0)[2] + 0.3
    with pytest.raises(LemarioError, match="--imitate -1"):
        replace(cfg, imitate=-1.0).validate()
    with pytest.raises(LemarioError, match="--imitate-x 500 300: give LO < HI"):
        replace(cfg, imitate_x=(500, 300)).validate()


# ---- videos ----------------------------------------------------------------------------------------------------
def test_render_writes_playable_mp4_and_gif(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    from lemario.play.render import RenderConfig, render

    s = render(RenderConfig(agent="biased", episodes=2, env=EnvConfig(max_steps=40), out=tmp_path, fps=15))
    steps = s["chosen"]["steps"]
    assert s["frames"] == steps + 1
    reader = imageio.get_reader(tmp_path / "best.mp4")
    n = sum(1 for _ in reader)
    first = reader.get_data(0)
    assert n == steps + 1 and first.shape == (224 * 2 + 64, 240 * 2, 3)
    with Image.open(tmp_path / "best.gif") as gif:
        assert gif.n_frames == s["gif_frames"] == len(range(0, steps + 1, 2)) and gif.width == 256
    assert s["chosen"]["max_x"] == max(c["max_x"] for c in s["candidates"])


def test_survival_weighted_score_against_a_hand_computation():
    decoded = torch.tensor([[[10.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.5, 0.0], [10.0, 0.0, 0.0, 0.0]]])  # a coin-flip death
    total, alive = survival_weighted(decoded, RewardWeights(death_penalty=50.0), torch.ones(3))
    # step 0: 1 x 10; step 1: 1 x (10 - 0.5 x 50); step 2: 0.5 x 10 (alive only if step 1 was survived)
    assert total.tolist() == [10 + (10 - 25) + 5] and alive.tolist() == [0.5]
    total, _ = survival_weighted(decoded, RewardWeights(death_penalty=50.0), torch.tensor([1.0, 0.5, 0.25]))
    assert total.tolist() == [10 + 0.5 * (10 - 25) + 0.25 * 5]
    flat = (scalar_reward(decoded, RewardWeights(death_penalty=50.0))).sum(-1)
    assert flat.tolist() == [30 - 25], "without survival a dead plan keeps its later progress"
    flag = torch.tensor([[[10.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.5], [10.0, 0.0, 0.0, 0.0]]])  # a coin-flip flag
    total, alive = survival_weighted(flag, RewardWeights(death_penalty=50.0, flag_bonus=200.0), torch.ones(3))
    # step 1: 10 + 0.5 x 200; the flag ends the episode as a death does: step 2 counts half
    assert total.tolist() == [10 + (10 + 100) + 5] and alive.tolist() == [0.5]


def test_one_scalar_reward_in_pixels_for_planner_and_imagination():
    decoded = torch.tensor([[6.0, 200.0, 0.0, 0.0], [6.0, 0.0, 0.5, 0.0], [6.0, 0.0, 0.0, 0.25]])  # px, points, P's
    assert scalar_reward(decoded, RewardWeights(flag_bonus=100.0)).tolist() == [6.0, 6.0 - 25.0, 6.0 + 25.0]
    weights = RewardWeights(death_penalty=40.0, score_weight=1.5, flag_bonus=0.0)
    assert scalar_reward(decoded, weights).tolist() == [9.0, -14.0, 6.0]
    assert PlannerConfig().reward.death_penalty == 50.0 and ImagineConfig().reward.death_penalty == 5 * RETURN_UNIT


def test_several_specs_of_one_method_are_its_seeds(tmp_path):
    s = evaluate(
        EvalConfig(
            agents=("random", "uniform", "biased"), episodes=2, workers=1, env=EnvConfig(max_steps=60), out=tmp_path
        )
    )
    assert list(s["kseed"]) == ["uniform"] and s["kseed"]["uniform"]["seeds"] == 2  # random is uniform's spec
    means = [s["per_agent"][a]["mean_max_x"] for a in ("random", "uniform")]
    assert s["kseed"]["uniform"]["mean_of_means"] == pytest.approx(np.mean(means))
    assert "uniform: K=2 seeds" in format_summary({**s, "out": str(tmp_path)})


def test_agents_on_several_levels_one_evaluation_each(tmp_path):
    from lemario.play.evaluate import evaluate_levels, format_levels

    cfg = EvalConfig(
        agents=("biased",), episodes=2, workers=1, env=EnvConfig(max_steps=40), out=tmp_path, levels=("1-1", "4-1")
    )
    levels = evaluate_levels(cfg)
    assert list(levels) == ["1-1", "4-1"] and (tmp_path / "4-1" / "summary.json").exists()
    again = evaluate(replace(cfg, levels=(), env=EnvConfig(max_steps=40, level="4-1"), out=tmp_path / "again"))
    assert levels["4-1"]["per_agent"] == again["per_agent"], "a level's evaluation is the single-level one"
    pooled = json.loads((tmp_path / "summary.json").read_text())
    assert pooled["per_level"]["1-1"]["biased"] == levels["1-1"]["per_agent"]["biased"]
    means = [levels[lv]["per_agent"]["biased"]["mean_max_x"] for lv in ("1-1", "4-1")]
    assert pooled["per_agent"]["biased"]["episodes"] == 4
    assert pooled["per_agent"]["biased"]["mean_max_x"] == pytest.approx(np.mean(means)), "the mean of level means"
    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["level"] for r in rows] == ["1-1", "1-1", "4-1", "4-1"]
    table = format_levels(levels)
    assert "1-1" in table.splitlines()[0] and "4-1" in table.splitlines()[0] and "biased" in table
    # a finished evaluation run again is not played again (its summary is reused); another one is
    mtime = (tmp_path / "4-1" / "episodes.jsonl").stat().st_mtime
    assert evaluate_levels(cfg)["4-1"]["per_agent"] == levels["4-1"]["per_agent"]
    assert (tmp_path / "4-1" / "episodes.jsonl").stat().st_mtime == mtime
    more = evaluate(
        replace(cfg, levels=(), env=EnvConfig(max_steps=40, level="4-1"), episodes=3, out=tmp_path / "again")
    )
    assert more["per_agent"]["biased"]["episodes"] == 3


def test_imagine_imitates_the_flag_episodes_of_its_corpus(tmp_path, capsys):
    """`lemario imagine --imitate`: the policy's sidecar counts the imitated steps, every step of the flag episodes
    but their last frames (and the windows' first frames); a corpus without a flag says so and imitates none."""
    from lemario.control.imagination import PRESETS as IMAGINE_PRESETS
    from lemario.control.imagination import run_imagine
    from lemario.model.train import PRESETS as TRAIN_PRESETS
    from lemario.model.train import train
    from lemario.model.world_model import load_world_model

    from synthetic import write_corpus

    flagged = write_corpus(tmp_path / "flagged", episodes=4, steps=20, flags=2)
    plain = write_corpus(tmp_path / "plain", episodes=4, steps=20)
    tiny = TRAIN_PRESETS["tiny"]
    train(replace(tiny, corpus=flagged, out=tmp_path / "wm", steps=5, progress=False, tensorboard=False))
    wm = tmp_path / "wm" / "model.safetensors"
    history = load_world_model(wm)[0].history  # the tiny preset's MLP predictor: 1
    cfg = replace(IMAGINE_PRESETS["tiny"], world_model=wm, updates=3, imitate=1.0, min_action_share=0, progress=False)
    policy = run_imagine(replace(cfg, corpus=flagged, out=tmp_path / "pi"))
    assert checkpoint.load_meta(policy, kind="policy")["imitated_steps"] == 2 * (21 - history)
    policy = run_imagine(replace(cfg, corpus=plain, out=tmp_path / "pi2"))
    assert checkpoint.load_meta(policy, kind="policy")["imitated_steps"] == 0
    assert "has no step to imitate, no imitation" in capsys.readouterr().out


def test_previous_action_models_plan_and_act_through_the_harness(tmp_path, monkeypatch):
    from lemario.control.imagination import PRESETS as IMAGINE_PRESETS
    from lemario.control.imagination import run_imagine
    from lemario.core import checkpoint
    from lemario.model.train import PRESETS as TRAIN_PRESETS
    from lemario.model.train import train

    from synthetic import write_corpus

    corpus = write_corpus(tmp_path / "corpus", episodes=6, steps=30)
    tiny = TRAIN_PRESETS["tiny"]
    model = replace(tiny.model, prev_action=True)
    train(replace(tiny, corpus=corpus, out=tmp_path / "wm", steps=10, model=model, progress=False, tensorboard=False))
    wm = tmp_path / "wm" / "model.safetensors"
    imagine = replace(IMAGINE_PRESETS["tiny"], world_model=wm, corpus=corpus, out=tmp_path / "pi", progress=False)
    policy = run_imagine(imagine)
    meta = checkpoint.load_meta(policy, kind="policy")
    assert meta["config"]["state_dim"] == model.latent_dim + model.n_actions

    def play(out: str, *agents: str, **kw) -> dict:
        """One 12-step episode of each agent into tmp_path / out."""
        cfg = EvalConfig(agents=agents, episodes=1, workers=1, env=EnvConfig(max_steps=12), out=tmp_path / out, **kw)
        return evaluate(cfg)

    def rows(out: str, agent: str) -> list[tuple]:
        lines = (tmp_path / out / "episodes.jsonl").read_text().splitlines()
        return [(r["max_x"], r["actions"]) for r in map(json.loads, lines) if r["agent"] == agent]

    s = play(
        "ev", f"planner:{wm}", f"policy:{policy}", planner=PlannerConfig(samples=16, elites=4, iterations=1, horizon=4)
    )
    assert [a["episodes"] for a in s["per_agent"].values()] == [1, 1]
    for spec in (f"planner:{wm}", f"policy:{policy}"):  # both act through the model: both are checked against it
        assert {"predicted_dx_mean", "realized_dx_mean", "dx_correlation"} <= set(s["per_agent"][spec])
    # an ensemble: two copies of the policy play its episode; a second policy makes a real ensemble that plays
    other = run_imagine(replace(imagine, out=tmp_path / "pi2", seed=imagine.seed + 1, snapshot_every=10))
    # its snapshot after 10 of its 20 updates is, bit for bit, the policy of a 10-update run
    assert sorted(p.name for p in (tmp_path / "pi2" / "snapshots").iterdir()) == [
        "policy-000010.json",
        "policy-000010.safetensors",
    ]
    short = run_imagine(replace(imagine, out=tmp_path / "pi3", seed=imagine.seed + 1, updates=10))
    snap, snap_meta = checkpoint.load(tmp_path / "pi2" / "snapshots" / "policy-000010.safetensors", kind="policy")
    short_tensors = checkpoint.load(short)[0]
    assert snap_meta["updates"] == 10 and snap.keys() == short_tensors.keys()
    assert all(torch.equal(v, short_tensors[k]) for k, v in snap.items())
    copies, pair = f"policy:{policy},{policy}", f"policy:{policy},{other}"
    ensembles = play("ev3", copies, pair)
    assert rows("ev3", copies) == rows("ev", f"policy:{policy}"), "the same steps, action for action"
    assert ensembles["per_agent"][pair]["episodes"] == 1
    with pytest.raises(LemarioError, match="single commas"):
        play("ev4", f"policy:{policy},,{other}")
    # shipped (scripts/ship_agent.py): the copy stands alone, bit for bit, and plays the same episode
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ship_agent", Path(__file__).parents[2] / "scripts" / "ship_agent.py")
    ship_agent = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ship_agent", ship_agent)  # its dataclass resolves names through its module
    spec.loader.exec_module(ship_agent)
    shipped = ship_agent.ship(ship_agent.Args(policy, eval=tmp_path / "ev", to=tmp_path / "shipped"))
    assert shipped["score"] == s["per_agent"][f"policy:{policy}"]
    assert [e["max_x"] for e in shipped["episodes"]] == [s["per_agent"][f"policy:{policy}"]["mean_max_x"]]
    (tmp_path / "wm").rename(tmp_path / "moved")  # the shipped folder needs nothing outside itself
    again = play("ev2", f"policy:{tmp_path / 'shipped' / 'policy.safetensors'}")
    assert next(iter(again["per_agent"].values()))["mean_max_x"] == s["per_agent"][f"policy:{policy}"]["mean_max_x"]


def test_the_progress_check_pairs_each_prediction_with_the_progress_that_followed():
    """Known answer: predicted 5 then 3 px, the game moved 4 then 3; a cancelled prediction (an exploration macro
    replaced the action) is not paired; a step without a prediction is not either."""
    from lemario.control.agents import ProgressCheck

    check = ProgressCheck()
    check.reset()
    check.observe({"x_pos": 40})  # the first frame: nothing to pair yet
    check.expect(5.0, {"x_pos": 40})
    check.observe({"x_pos": 44})
    check.expect(3.0, {"x_pos": 44})
    check.observe({"x_pos": 47})
    check.expect(9.0, {"x_pos": 47})
    check.cancel()
    check.observe({"x_pos": 40})
    check.observe({"x_pos": 41})
    assert (check.predicted, check.realized) == ([5.0, 3.0], [4, 3])
    st = check.stats()
    assert (st["predicted_dx_mean"], st["realized_dx_mean"], st["dx_correlation"]) == (4.0, 3.5, 0.0)


def test_eval_and_render_play_the_frames_their_model_reads_unless_told_otherwise(tmp_path, capsys):
    from dataclasses import asdict

    from lemario.control.agents import agents_env, validate_spec
    from lemario.core import checkpoint
    from lemario.model.train import PRESETS as TRAIN_PRESETS
    from lemario.play.evaluate import eval_main
    from lemario.play.render import RenderConfig, render_main

    def save(name: str, **frames) -> str:
        torch.manual_seed(0)
        model = WorldModel(replace(TRAIN_PRESETS["tiny"].model, **frames))
        path = tmp_path / f"{name}.safetensors"
        checkpoint.save(path, model.state_dict(), {"kind": "world_model", "config": asdict(model.cfg)})
        return f"planner:{path}"

    wm = save("playfield", crop_top=32, pool=False)  # frames of the playfield, no max of two frames
    env = agents_env((wm, "biased"), EnvConfig(max_steps=9))
    assert env == EnvConfig(max_steps=9, crop_top=32, pool=False)
    assert agents_env(("biased",), EnvConfig()) == EnvConfig()  # no model: nothing to follow
    told = EnvConfig(crop_top=16)
    assert agents_env((wm,), told) == told  # frames passed explicitly are kept (and refused by the check)
    with pytest.raises(LemarioError, match="pass --crop-top 32 --no-pool"):
        validate_spec(wm, told)
    other = save("whole")
    assert agents_env((wm, other), EnvConfig()) == EnvConfig()  # models that disagree: nothing to follow

    planner = PlannerConfig(samples=8, elites=2, iterations=1, horizon=2)
    eval_main(EvalConfig(agents=(wm,), episodes=1, workers=1, env=EnvConfig(max_steps=5), out=tmp_path / "ev",
                         planner=planner, progress=False))  # fmt: skip
    assert "playing the frames the agents read: 4 stacked frames of 84 px, 32 rows cut" in capsys.readouterr().out
    env = json.loads((tmp_path / "ev" / "summary.json").read_text())["config"]["env"]
    assert (env["crop_top"], env["pool"]) == (32, False)
    render_main(RenderConfig(agent=wm, episodes=1, env=EnvConfig(max_steps=3), out=tmp_path / "render"))
    assert "--crop-top 32 --no-pool" in capsys.readouterr().out
    rendered = json.loads((tmp_path / "render" / "render.json").read_text())
    assert rendered["config"]["env"]["crop_top"] == 32 and rendered["git_commit"]


def test_the_shipped_agent_replays_its_evaluation_from_its_own_folder(tmp_path):
    """pretrained/1-1 (scripts/ship_agent.py): the policy and its world model load from the repository alone, play
    the frames they read without being told, and replay an episode of the evaluation that scored them exactly."""
    from lemario.play.evaluate import eval_main

    shipped = Path(__file__).parents[2] / "pretrained" / "1-1"
    prov = json.loads((shipped / "provenance.json").read_text())
    assert prov["score"]["episodes"] == len(prov["episodes"]) >= 30
    first = min(prov["episodes"], key=lambda e: e["steps"])  # the shortest: the test stays quick
    frames = ("frame_stack", "resize", "crop_top", "pool")  # left to eval: the model's own
    played = EnvConfig(**{k: v for k, v in prov["eval_config"]["env"].items() if k not in frames})
    eval_main(
        EvalConfig(
            agents=(f"policy:{shipped / 'policy.safetensors'}",),
            episodes=1,
            workers=1,
            env=played,
            seed_offset=first["eval_seed"] - EVAL_SEED_BASE,
            out=tmp_path / "ev",
            progress=False,
        )
    )
    (row,) = [json.loads(line) for line in (tmp_path / "ev" / "episodes.jsonl").read_text().splitlines()]
    assert (row["max_x"], row["steps"], row["end"]) == (first["max_x"], first["steps"], first["end"])
