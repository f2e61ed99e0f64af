"""The pure-PyTorch reference against an independent float64 transcription of the paper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.backends.kernels import LRNParams, PoolParams, reference_relu_lrn_pool


def paper_relu_lrn_pool(
    x: torch.Tensor, lrn: LRNParams | None, pool: PoolParams | None, towers: int = 1
) -> torch.Tensor:
    """float64, written from the paper's formula with explicit channel loops (no torch LRN);
    pool = first maximum in row-major window order (torch.argmax documents first-max)."""
    a = x.double()
    a = torch.where(a > 0, a, torch.zeros_like(a))
    if lrn is not None:
        c_total = a.shape[1]
        cpt, h = c_total // towers, lrn.size // 2
        planes = []
        for c in range(c_total):
            lo, hi = (c // cpt) * cpt, (c // cpt) * cpt + cpt - 1
            win = a[:, max(lo, c - h) : min(hi, c + h) + 1]
            s = lrn.k + lrn.alpha * (win * win).sum(dim=1)
            planes.append(a[:, c] / s**lrn.beta)
        a = torch.stack(planes, dim=1)
    if pool is not None:
        k, st_, p = pool.size, pool.stride, pool.pad
        padded = F.pad(a, (p, p, p, p), value=-math.inf)
        win = padded.unfold(2, k, st_).unfold(3, k, st_)  # N, C, OH, OW, k, k
        flat = win.reshape(*win.shape[:4], k * k)
        a = flat.gather(-1, flat.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return a


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    towers=st.sampled_from([1, 2]),
    cpt=st.integers(1, 6),
    hw=st.integers(3, 9),
    size=st.sampled_from([1, 3, 5, 7]),
    alpha=st.floats(1e-4, 0.5),
    beta=st.floats(0.1, 1.5),
    k=st.floats(0.5, 3.0),
    pool=st.sampled_from([None, PoolParams(3, 2), PoolParams(2, 2), PoolParams(3, 2, 1)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_reference_matches_paper_formula(n, towers, cpt, hw, size, alpha, beta, k, pool, seed):
    """The alpha*size mapping onto F.local_response_norm, the per-tower split and the pool."""
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, towers * cpt, hw, hw + 1, generator=gen, dtype=torch.float64)
    lrn = LRNParams(size, alpha, beta, k)
    got = reference_relu_lrn_pool(x, lrn, pool, towers)
    assert rel_err(got, paper_relu_lrn_pool(x, lrn, pool, towers)) < 1e-12


def test_towers_keep_window_inside_tower():
    """With towers=2 the last channel of tower 0 must not see tower 1 (huge values there)."""
    x = torch.ones(1, 4, 1, 1, dtype=torch.float64)
    x[:, 2:] = 1e3
    lrn = LRNParams(5, 1.0, 1.0, 1.0)
    y = reference_relu_lrn_pool(x, lrn, None, towers=2)
    assert y[0, 1, 0, 0].item() == pytest.approx(1 / (1 + 2))  # Σ a² over channels 0,1 only


@pytest.mark.parametrize("pool", [None, PoolParams(3, 2), PoolParams(3, 2, 1)])
def test_reference_gradcheck(pool):
    """float64 gradcheck.  Inputs are kept away from 0 and from each other: a relu kink or a
    pool tie breaks finite differences, not the analytic gradient."""
    n, c, h, w = 1, 4, 5, 5
    base = torch.randperm(n * c * h * w, dtype=torch.float64).reshape(n, c, h, w)
    x = (0.5 + base / base.numel()).requires_grad_()
    lrn = LRNParams(3, 0.3, 0.75, 1.0)
    assert torch.autograd.gradcheck(lambda t: reference_relu_lrn_pool(t, lrn, pool, 2), (x,))


def test_reference_rejects_uneven_towers():
    with pytest.raises(ValueError):
        reference_relu_lrn_pool(torch.randn(1, 5, 3, 3), LRNParams(5, 1e-4, 0.75, 2.0), None, 2)


def test_params_validate():
    with pytest.raises(ValueError):
        LRNParams(4, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError):
        PoolParams(3, 2, 2)
