"""SIGReg: the Sketched Isotropic Gaussian Regularizer of LeJEPA / LeWorldModel.

Project the embeddings on M random unit directions; on each direction compare the empirical characteristic
function with N(0, 1)'s, exp(-t^2/2), by the Epps-Pulley statistic

    EP = N * integral_{-tmax}^{tmax} |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt   (trapezoid rule, `knots` points)

and average over directions (and over the leading axes, e.g. time). Low on N(0, I); high on shifted,
scaled, non-Gaussian or collapsed embeddings. Directions are resampled on every call.

Under torch.distributed the statistic is the one of the global batch: every rank draws the same directions
(a generator seeded identically on all ranks), the cos/sin means are all-reduced, and N is the global count.
The reference LeWM implementation computes it per rank instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def epps_pulley_weights(knots: int = 17, t_max: float = 3.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes t on [0, t_max] (knots,) and weights (knots,) for the integral over [-t_max, t_max].

    The integrand is even in t, so the symmetric integral is twice the half-line trapezoid rule: weights
    dt at the ends and 2 dt inside, times the exp(-t^2/2) window (as LeJEPA computes it).
    """
    t = torch.linspace(0.0, t_max, knots, device=device)
    dt = t_max / (knots - 1)
    trap = torch.full((knots,), 2 * dt, device=device)
    trap[0] = trap[-1] = dt
    return t, trap * torch.exp(-t.square() / 2)


def sigreg(
    z: torch.Tensor,
    num_proj: int = 1024,
    knots: int = 17,
    t_max: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SIGReg statistic of embeddings z (..., N, D): mean over the leading axes and M directions.

    `generator` draws the directions (pass one seeded identically on every rank under DDP).
    """
    n_local, d = z.shape[-2], z.shape[-1]
    directions = torch.randn(d, num_proj, generator=generator, device=generator.device if generator else z.device)
    directions = directions.to(z.device, torch.float32)
    directions = directions / directions.norm(dim=0, keepdim=True)  # (D, M) unit columns
    t, weights = epps_pulley_weights(knots, t_max, z.device)
    proj = z.float() @ directions  # (..., N, M)
    x_t = proj.unsqueeze(-1) * t  # (..., N, M, K)
    cos_sum, sin_sum = x_t.cos().sum(-3), x_t.sin().sum(-3)  # (..., M, K)
    n = torch.tensor(float(n_local), device=z.device)
    if _distributed():
        stacked = torch.stack([cos_sum, sin_sum])
        stacked = _all_reduce_sum(stacked)
        cos_sum, sin_sum = stacked[0], stacked[1]
        n = _all_reduce_sum(n)
    target = torch.exp(-t.square() / 2)  # (K,) characteristic function of N(0, 1)
    err = (cos_sum / n - target).square() + (sin_sum / n).square()  # (..., M, K)
    statistic = (err @ weights) * n  # (..., M)
    return statistic.mean()


class _AllReduceSum(torch.autograd.Function):
    """All-reduce with a gradient: d(sum over ranks)/d(local) is the all-reduced upstream gradient."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)
