"""SIGReg known answers (LeWorldModel's published values), invariances, and the global statistic under DDP."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lemario.model.sigreg import epps_pulley_weights, sigreg


def mean_stat(make, n=10, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return sum(sigreg(make(g), generator=g, **kw).item() for _ in range(n)) / n


def test_published_values_b128_d192():
    normal = mean_stat(lambda g: torch.randn(128, 192, generator=g))
    scaled = mean_stat(lambda g: 0.1 * torch.randn(128, 192, generator=g))
    collapsed = mean_stat(lambda g: torch.randn(1, 192, generator=g).expand(128, 192))
    assert normal == pytest.approx(1.07, abs=0.15)
    assert scaled == pytest.approx(49.5, abs=1.0)
    assert collapsed == pytest.approx(126, rel=0.15)


def test_high_on_shifted_scaled_uniform_collapsed():
    low = mean_stat(lambda g: torch.randn(1024, 4, generator=g))
    assert low < 1.5
    assert mean_stat(lambda g: torch.randn(1024, 4, generator=g) + 1.0) > 20 * low
    assert mean_stat(lambda g: 3.0 * torch.randn(1024, 4, generator=g)) > 20 * low
    # in few dimensions random projections of a uniform cube stay non-Gaussian (in many they mix to a Gaussian)
    assert mean_stat(lambda g: (torch.rand(1024, 2, generator=g) - 0.5) * 12**0.5) > 4 * low
    assert mean_stat(lambda g: torch.zeros(1024, 4)) > 100 * low


def test_order_invariant_and_deterministic():
    z = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    a = sigreg(z, generator=torch.Generator().manual_seed(7))
    b = sigreg(z[torch.randperm(256)], generator=torch.Generator().manual_seed(7))
    c = sigreg(z, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a, b, rtol=1e-5) and a == c
    assert sigreg(z, generator=torch.Generator().manual_seed(8)) != a, "directions are resampled"


def test_leading_axes_are_averaged():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 128, 16, generator=g)  # (T, N, D)
    per_t = [sigreg(z[t], generator=torch.Generator().manual_seed(9)) for t in range(5)]
    assert torch.allclose(sigreg(z, generator=torch.Generator().manual_seed(9)), torch.stack(per_t).mean(), rtol=1e-5)


def test_quadrature_weights_integrate_the_window():
    t, w = epps_pulley_weights(17, 3.0)
    assert t[0] == 0 and t[-1] == 3 and len(t) == 17
    # integral over [-3, 3] of exp(-t^2/2) = sqrt(2 pi) * erf(3/sqrt 2)
    exact = (2 * torch.pi) ** 0.5 * torch.erf(torch.tensor(3 / 2**0.5))
    assert w.sum().item() == pytest.approx(exact.item(), rel=1e-3)


def test_gradient_pushes_towards_gaussian():
    z = (0.2 * torch.randn(256, 8, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_()
    opt = torch.optim.SGD([z], lr=0.05)
    g = torch.Generator().manual_seed(0)
    first = sigreg(z, generator=g).item()
    for _ in range(300):
        opt.zero_grad()
        sigreg(z, num_proj=256, generator=g).backward()
        opt.step()
    assert sigreg(z, generator=g).item() < first / 10
    assert abs(z.mean().item()) < 0.2 and abs(z.std().item() - 1) < 0.2


def _ddp_worker(rank: int, world: int, port: int, z: torch.Tensor, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        local = z.chunk(world)[rank].clone().requires_grad_()
        stat = sigreg(local, num_proj=64, generator=torch.Generator().manual_seed(5))
        stat.backward()
        out[rank] = (stat.item(), local.grad.clone())
    finally:
        dist.destroy_process_group()


def test_ddp_statistic_equals_the_global_batch():
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(2)) * 1.5 + 0.3
    full = z.clone().requires_grad_()
    expected = sigreg(full, num_proj=64, generator=torch.Generator().manual_seed(5))
    expected.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.start_processes(_ddp_worker, args=(2, port, z, out), nprocs=2, start_method="spawn")
    stats = [out[r][0] for r in range(2)]
    assert stats[0] == pytest.approx(expected.item(), rel=1e-5) and stats[1] == pytest.approx(expected.item(), rel=1e-5)
    # DDP averages parameter gradients over ranks; the all-reduced backward makes that the global gradient
    grads = torch.cat([out[0][1], out[1][1]]) / 2
    assert torch.allclose(grads, full.grad, rtol=1e-4, atol=1e-7)
    # a per-rank statistic (what the reference implementation computes) would differ
    per_rank = [sigreg(c, num_proj=64, generator=torch.Generator().manual_seed(5)).item() for c in z.chunk(2)]
    assert abs(sum(per_rank) / 2 - expected.item()) > 1e-3
