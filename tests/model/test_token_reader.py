"""The token reader: a state head on the ViT's patch tokens (`--model.state-points`), its geometry, its training and
what the push players read through it."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import LatentPlanner
from lemario.core.device import to_torch
from lemario.core.errors import LemarioError
from lemario.data.buffer import EpisodeBuffer
from lemario.games.push.board import head_state, head_targets, random_start
from lemario.games.push.env import PushGame
from lemario.games.push.opponents import chase_t
from lemario.games.push.render import PLAYER_COLOURS, render
from lemario.model.encoders import TokenReader
from lemario.model.loss import LossConfig, world_model_loss
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel, load_world_model
from lemario.play.push_data import PushDataConfig, generate

from conftest import run_cli

TOKENS = replace(PRESETS["push-tiny"].model, state_points=3)


class Fixed(nn.Module):
    """Stands in for the reader's per-token network: returns `out` (P, points, 3) for every frame."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (N, P, dim) -> (N, P, points * 3)
        return self.out.flatten(1).expand(len(tokens), -1, -1)


def test_the_reader_reads_the_chosen_tokens_centre_plus_its_offset():
    reader = TokenReader(dim=4, grid=2, points=2, extra=1, hidden=8)
    # a 2 x 2 grid over [-1, 1]: centres row by row, x first
    assert torch.allclose(reader.centres, torch.tensor([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]))
    out = torch.zeros(4, 2, 3)
    out[1, 0] = torch.tensor([50.0, 0.0, 0.0])  # point 0: all weight on token 1 (top right), no offset
    out[2, 1] = torch.tensor([50.0, 0.25, -0.5])  # point 1: token 2 (bottom left), a quarter patch right, half up
    reader.net = Fixed(out)
    tokens = torch.randn(3, 4, 4)
    read = reader(tokens)  # (3, 2 * 2 + 1)
    assert read.shape == (3, 5)
    assert torch.allclose(read[:, :2], torch.tensor([0.5, -0.5]).expand(3, 2), atol=1e-6)
    assert torch.allclose(read[:, 2:4], torch.tensor([-0.5 + 0.25, 0.5 - 0.5]).expand(3, 2), atol=1e-6)
    # the extra outputs read the last point's tokens
    assert torch.allclose(read[:, 4:], reader.extra(tokens[:, 2]), atol=1e-5)
    out[:, 1, 0] = 0.0  # point 1 spread evenly: the mean of the centres (plus its one offset / 4)
    assert torch.allclose(reader(tokens)[:, 2:4], torch.tensor([0.25 / 4, -0.5 / 4]).expand(3, 2), atol=1e-6)


def test_a_token_on_the_disc_reads_the_disc_where_the_state_head_targets_put_it():
    """The reader's [-1, 1] frame coordinates are the state head's board coordinates: the patch a rendered disc
    lies in has its centre within half a patch (and a pixel of the picture's rounding) of the disc's target."""
    model = WorldModel(TOKENS)  # 64-px frames, 8-px patches: an 8 x 8 grid
    grid = model.encoder.grid
    state = random_start(np.random.default_rng(4))
    frame = render(state, TOKENS.image_size)
    amber = np.abs(frame.astype(np.int32) - PLAYER_COLOURS[0]).max(-1) < 8  # (64, 64) the disc's inside
    rows, cols = np.nonzero(amber)
    patch = int(rows.mean() // 8) * grid + int(cols.mean() // 8)
    out = torch.zeros(grid * grid, 3, 3)
    out[patch, 0, 0] = 50.0
    model.token_reader.net = Fixed(out)
    with torch.no_grad():
        _, read = model.eval().encode_read(torch.as_tensor(frame)[None, None])
    target = head_targets(state)[:2]
    pixel = 2 / TOKENS.image_size
    assert np.abs(read[0, :2].numpy() - target).max() <= 1 / grid + pixel  # half a patch: 1 / grid in [-1, 1]


def test_only_a_vit_with_room_in_its_state_head_takes_a_token_reader():
    with pytest.raises(LemarioError, match="--model.encoder vit"):
        WorldModel(replace(TOKENS, encoder="cnn"))
    with pytest.raises(LemarioError, match="state_head / 2"):
        WorldModel(replace(TOKENS, state_points=5))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("push") / "data"
    generate(PushDataConfig(out=out, episodes=6, turns=2, workers=1, progress=False))
    return to_torch(EpisodeBuffer.load(out).sample(4, 4, 1, np.random.default_rng(1)), torch.device("cpu"))


def test_the_loss_trains_the_reader_and_the_encoder_under_it(batch):
    torch.manual_seed(0)
    model = WorldModel(TOKENS)
    loss, metrics = world_model_loss(model, batch, LossConfig(context=3, sigreg_projections=16))
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"token_reader.net.0.weight", "token_reader.extra.weight", "encoder.patchify.weight"} <= grads
    # the reader's term is its MSE against the head targets, weighted as the state head's
    with torch.no_grad():
        _, read = model.encode_read(batch["obs"])
    assert metrics["loss/state_tokens"] == pytest.approx(torch.nn.functional.mse_loss(read, batch["state"]).item())
    # weighted as the state head's terms: a state weight of 1 adds the three of them
    model.eval()  # no dropout, and one SIGReg draw for both
    without, with_one = (
        world_model_loss(
            model, batch, LossConfig(context=3, sigreg_projections=16, state_weight=w), torch.Generator().manual_seed(0)
        )
        for w in (0, 1)
    )
    terms = with_one[1]["loss/state"] + with_one[1]["loss/state_predicted"] + with_one[1]["loss/state_tokens"]
    assert with_one[0].item() - without[0].item() == pytest.approx(terms, rel=1e-4)


def test_a_reader_latent_model_projects_the_cls_token_and_the_reading_together(batch):
    torch.manual_seed(0)
    model = WorldModel(replace(TOKENS, reader_latent=True)).eval()
    obs = batch["obs"][0]  # (K+1, 1, 64, 64, 3)
    with torch.no_grad():
        tokens = model.encoder.tokens(model.pixels(obs))  # (K+1, 1 + P, E)
        reading = model.token_reader(tokens[:, 1:])
        z, read = model.encode_read(obs)
        trunk = model.trunk(obs)
    assert trunk.shape == (len(obs), TOKENS.encoder_dim + TOKENS.state_head)
    assert torch.allclose(trunk, torch.cat([tokens[:, 0], reading], dim=-1), atol=1e-6)
    assert torch.allclose(z, model.project(trunk), atol=1e-5) and torch.allclose(z, model.encode(obs), atol=1e-5)
    assert torch.allclose(read, reading, atol=1e-6)
    with pytest.raises(LemarioError, match="--model.state-points"):
        WorldModel(replace(TOKENS, state_points=0, reader_latent=True))


@pytest.mark.parametrize("reader_latent", [False, True])
def test_the_prediction_loss_reaches_the_reader_only_through_a_reader_latent(batch, reader_latent):
    """End to end, no stop-gradient: with the reading in the latent, next-latent prediction and SIGReg shape the
    reader too; without it only the state losses do."""
    torch.manual_seed(0)
    model = WorldModel(replace(TOKENS, reader_latent=reader_latent))
    loss, _ = world_model_loss(model, batch, LossConfig(context=3, sigreg_projections=16, state_weight=0))
    loss.backward()
    grad = model.token_reader.net[0].weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == reader_latent


def test_the_reader_learns_where_things_are(batch):
    """A few hundred supervised steps on a tiny corpus: the reader's error falls far below a constant reading's."""
    torch.manual_seed(0)
    model = WorldModel(TOKENS)
    obs, target = batch["obs"].flatten(0, 1), batch["state"].flatten(0, 1)  # (20, 1, 64, 64, 3), (20, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model.encode_read(obs)[1][:, :6], target[:, :6])
        opt.zero_grad()
        loss.backward()
        opt.step()
    constant = (target[:, :6] - target[:, :6].mean(0)).square().mean()
    assert loss.item() < 0.1 * constant.item()


def test_the_players_read_the_frames_they_see_through_the_reader_and_predictions_relative_to_them():
    torch.manual_seed(0)
    model = WorldModel(TOKENS).eval()
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=1, iterations=1), seed=0, warm="chase_t")
    env = PushGame()
    env.reset(seed=3)
    seen = env.seen()
    frames = torch.as_tensor(seen.frames)[:, None]  # (1, 1, 64, 64, 3)
    planner(seen)
    with torch.no_grad():
        z, read = model.encode_read(frames)  # (1, D), (1, 8)
        assert not torch.allclose(read, model.decode_state(z))  # the reader, not the state head
        want = chase_t(head_state(read[0].numpy()), 0)  # the rule on the board the reader reads
        assert np.allclose(planner.last.actions[0].numpy(), want, atol=1e-5)
        # a predicted latent reads as the state head's change from the newest frame, added to the reader's reading
        ahead = z + 0.1
        shifted = planner.read([ahead], newest=True)
        assert torch.allclose(shifted, read + model.decode_state(ahead) - model.decode_state(z), atol=1e-6)


def test_a_token_model_trains_through_the_cli_and_its_probe_scores_the_reader(tmp_path):
    corpus = tmp_path / "data"
    generate(PushDataConfig(out=corpus, episodes=6, turns=2, workers=1, progress=False))
    out = tmp_path / "wm"
    r = run_cli(
        "train", "--preset", "push-tiny", "--corpus", str(corpus), "--out", str(out), "--steps", "10",
        "--model.state-points", "3",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    model, _ = load_world_model(out / "model.safetensors")
    assert model.cfg.state_points == 3 and hasattr(model, "token_reader")
    r = run_cli("probe", str(out / "model.safetensors"), "--corpus", str(corpus), "--mlp-steps", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "probe.json").read_text())
    assert 0 < report["token_reader"]["amber_error"] < 512 and "token reader" in r.stdout
    assert report["token_reader"] != report["state_head"]
