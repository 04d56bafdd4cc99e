"""The reward head along the actions taken: rollouts end with their episodes, and a frame's figures do not depend on
which other frames share its batch."""

import numpy as np
import torch

from lemario.data.buffer import EpisodeBuffer
from lemario.model.taken import taken_rollouts, transitions_ahead
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel

from synthetic import write_corpus


def test_rollouts_end_with_their_episodes_and_batches_do_not_matter(tmp_path):
    buffer = EpisodeBuffer.load(write_corpus(tmp_path / "c", episodes=3, steps=20))
    torch.manual_seed(0)
    model = WorldModel(PRESETS["tiny"].model)
    ends = buffer.starts + buffer.lengths - 1
    steps, valid = transitions_ahead(buffer, np.array([ends[0] - 2, ends[0]]), 4)
    assert valid.tolist() == [[True, True, False, False], [False] * 4] and steps[0, :2].tolist() == [
        ends[0] - 2,
        ends[0] - 1,
    ]
    every = taken_rollouts(model, buffer, horizon=4, batch=7)
    assert every.ahead.shape == (len(buffer), 4, 4) and every.horizon == 4
    assert (every.ahead[~every.valid] == 0).all() and np.isfinite(every.ahead).all()
    assert not every.valid[ends].any() and every.valid[buffer.starts].all()
    assert ((every.now[:, 2] > 0) & (every.now[:, 2] < 1)).all(), "P(death) is a probability"
    some = np.array([buffer.starts[1], ends[0] - 1, 5])
    part = taken_rollouts(model, buffer, some, horizon=4, batch=2)
    np.testing.assert_allclose(part.ahead, every.ahead[some], atol=1e-5)
    np.testing.assert_allclose(part.now, every.now[some], atol=1e-5)
