"""Triton kernels vs the float64 paper formula: CPU interpreter (default) and CUDA (gpu marker).

Every test runs for both forward variants ("windows": lrn_pool, "rows": lrn_pool_rows; see
library.VARIANT), directly through the launchers and through the public op, and every backward test
for both backward variants ("gather": lrn_pool_bwd, "rows": lrn_pool_bwd_rows; library.BWD_VARIANT).

Without CUDA, tests/conftest.py switches Triton's interpreter on before triton is imported (a GPU
run compiles the kernels for real).  Every kernel launch writes
into NaN-poisoned buffers, so an element the kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import pytest
import torch

from alexnetc.backends.kernels import (
    LRNParams,
    PoolParams,
    choose,
    fused_relu_lrn_pool,
    library,
    lrn_pool,
    lrn_pool_bwd,
    lrn_pool_bwd_rows,
    lrn_pool_rows,
    reference_relu_lrn_pool,
)

from test_lrn_reference import paper_relu_lrn_pool, rel_err

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


@pytest.fixture(params=["windows", "rows"])
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which forward kernel the launch helpers and the public op use."""
    monkeypatch.setattr(library, "VARIANT", request.param)
    return request.param


@pytest.fixture(params=["gather", "rows"])
def bwd_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which backward kernel the launch helpers and the public op use."""
    monkeypatch.setattr(library, "BWD_VARIANT", request.param)
    return request.param


LRN_A = LRNParams(5, 0.1, 0.75, 2.0)  # alpha large enough that the LRN visibly matters
R8 = {"IR": 8, "CB": 3, "num_warps": 4, "PREFETCH": 0}  # rows: 3-row bands, 3-channel chunks
R16P = {"IR": 16, "CB": 5, "num_warps": 4, "PREFETCH": 1}
B4 = {"BR": 4, "CB": 3, "num_warps": 4}  # rows backward: 4-row bands (odd OR/band edges)
# Channel loops unrolled by the ring period with a remainder (5 = 4 + 1 steps; the backward's
# 3 + 2*2*HALF), and cp.async-pipelined ones: on a GPU these compile differently; under the
# interpreter they check the kernels take the parameters.
R8U = {"IR": 8, "CB": 5, "num_warps": 4, "PREFETCH": 0, "UNROLL": 1}
R16S = {"IR": 16, "CB": 5, "num_warps": 4, "PREFETCH": 0, "STAGES": 2}
B4U = {**B4, "UNROLL": 1}
CASES = [
    # shape, lrn, pool, towers, dtype, channels_last, fwd config (windows, rows),
    # bwd config (gather, rows)
    pytest.param((2, 7, 11, 13), LRN_A, PoolParams(3, 2), 1, torch.float32, False,
                 ({"BLOCK_OH": 2, "BLOCK_OW": 4, "CB": 3}, R8U),
                 ({"BLOCK_H": 4, "BLOCK_W": 8, "CB": 3}, B4U),
                 id="conv-block-chunk-and-tile-edges"),
    pytest.param((1, 8, 9, 10), LRNParams(5, 0.02, 0.6, 1.5), PoolParams(3, 2, 1), 2,
                 torch.float32, True, (None, R16P), (None, {"BR": 2, "CB": 5, "num_warps": 4}),
                 id="towers2-pad1-channels_last"),
    pytest.param((1, 1, 7, 7), LRNParams(3, 0.3, 0.75, 1.0), PoolParams(2, 2), 1,
                 torch.float32, False, (None, None), (None, {"BR": 1, "CB": 2, "num_warps": 1}),
                 id="single-channel-batch1"),
    pytest.param((2, 6, 9, 9), None, PoolParams(3, 2), 1, torch.float32, False, (None, R8),
                 (None, None), id="relu-pool"),
    pytest.param((1, 6, 5, 6), LRNParams(7, 0.2, 0.75, 2.0), None, 2, torch.float32, False,
                 (None, None), (None, None), id="relu-lrn-towers2"),
    pytest.param((2, 10, 13, 11), LRN_A, PoolParams(3, 2), 2, torch.bfloat16, False,
                 ({"BLOCK_OH": 4, "BLOCK_OW": 8, "CB": 4}, R8), (None, None), id="bf16-towers2"),
    pytest.param((1, 8, 55, 55), LRN_A, PoolParams(3, 2), 1, torch.float32, False,
                 ({"BLOCK_OH": 8, "BLOCK_OW": 32, "CB": 8}, R16S),
                 ({"BLOCK_H": 32, "BLOCK_W": 64, "CB": 8},
                  {"BR": 16, "CB": 8, "num_warps": 4, "STAGES": 2}),
                 id="conv1-geometry"),
    pytest.param((1, 8, 27, 27), LRN_A, PoolParams(3, 2), 2, torch.float32, True,
                 ({"BLOCK_OH": 8, "BLOCK_OW": 16, "CB": 8}, {**R16P, "IR": 32}),
                 ({"BLOCK_H": 32, "BLOCK_W": 32, "CB": 8}, {"BR": 8, "CB": 8, "num_warps": 4}),
                 id="conv2-geometry-channels_last"),
    pytest.param((1, 5, 12, 9), LRNParams(3, 0.2, 0.75, 1.0), PoolParams(4, 3, 2), 1,
                 torch.float32, False, (None, R8U), (None, B4U), id="pool4-stride3-pad2"),
    pytest.param((1, 4, 9, 11), LRNParams(1, 0.3, 0.75, 1.0), PoolParams(3, 2), 2,
                 torch.float32, False, (None, R8), (None, B4), id="lrn-size1"),
]  # fmt: skip


@pytest.mark.parametrize(("shape", "lrn", "pool", "towers", "dtype", "cl", "fcfg", "bcfg"), CASES)
def test_kernels_match_paper(
    device, variant, bwd_variant, shape, lrn, pool, towers, dtype, cl, fcfg, bcfg
):
    if variant == "rows" and bwd_variant == "rows":
        pytest.skip("interpreter time: both forwards write the same argmax, and the gather "
                    "backward already checks it from the rows forward")
    x = 2 * torch.randn(shape, device=device)
    if cl:
        x = x.to(memory_format=torch.channels_last)
    x = x.to(dtype)
    x64 = x.double().requires_grad_()
    want = paper_relu_lrn_pool(x64, lrn, pool, towers)

    y = torch.full(want.shape, float("nan"), device=device, dtype=dtype)
    if cl:
        y = y.to(memory_format=torch.channels_last)
    idx = torch.full_like(y, -7, dtype=torch.int8)
    launch = lrn_pool_rows.launch_forward if variant == "rows" else lrn_pool.launch_forward
    cfg = fcfg[1] if variant == "rows" else fcfg[0]
    launch(x, y, idx if pool else None, lrn, pool, towers, config=cfg)
    assert rel_err(y, want) < TOL[dtype]

    dy = torch.randn(want.shape, device=device).to(dtype)
    want.backward(dy.double())
    dx = torch.full_like(x, float("nan"))
    bwd = lrn_pool_bwd_rows if bwd_variant == "rows" else lrn_pool_bwd
    bwd.launch_backward(
        x, dy, idx if pool else None, dx, lrn, pool, towers,
        config=bcfg[1] if bwd_variant == "rows" else bcfg[0],
    )
    assert rel_err(dx, x64.grad) < TOL[dtype]


def test_public_op_autograd(device, variant, bwd_variant):
    """Dispatch + torch.library registration + autograd (argmax saved by the forward)."""
    lrn, pool = LRNParams(5, 0.05, 0.75, 2.0), PoolParams(3, 2)
    x = (2 * torch.randn(2, 6, 9, 11, device=device)).requires_grad_()
    y = fused_relu_lrn_pool(x, lrn, pool, towers=2)
    assert y.grad_fn is not None
    dy = torch.randn_like(y)
    y.backward(dy)
    x64 = x.detach().double().requires_grad_()
    want = paper_relu_lrn_pool(x64, lrn, pool, 2)
    want.backward(dy.double())
    assert rel_err(y.detach(), want) < 1e-5
    assert rel_err(x.grad, x64.grad) < 1e-5


def test_backward_without_saved_argmax(device, variant, bwd_variant):
    """The backward op recomputes the argmax when the forward did not save it."""
    x = 2 * torch.randn(1, 5, 9, 9, device=device)
    flat = (5, 0.05, 0.75, 2.0, 3, 2, 0)
    y, idx = torch.ops.alexnetc.relu_lrn_pool(x, *flat, 1, False)
    assert idx.numel() == 0
    dy = torch.randn_like(y)
    dx = torch.ops.alexnetc.relu_lrn_pool_backward(dy, x, idx, *flat, 1)
    x64 = x.double().requires_grad_()
    paper_relu_lrn_pool(x64, LRNParams(5, 0.05, 0.75, 2.0), PoolParams(3, 2)).backward(dy.double())
    assert rel_err(dx, x64.grad) < 1e-5


def test_unsupported_falls_back_to_reference(device, variant):
    x = torch.randn(1, 3, 7, 7, device=device, dtype=torch.float64)
    lrn, pool = LRNParams(11, 1e-2, 0.75, 2.0), PoolParams(3, 1)  # size > 9, K > 2*S
    assert torch.equal(fused_relu_lrn_pool(x, lrn, pool), reference_relu_lrn_pool(x, lrn, pool))


@pytest.mark.slow
def test_compiles_without_graph_break(device, variant, bwd_variant):
    lrn, pool = LRNParams(5, 0.05, 0.75, 2.0), PoolParams(3, 2)

    def f(t: torch.Tensor) -> torch.Tensor:
        return fused_relu_lrn_pool(t, lrn, pool, towers=2).sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    x = (2 * torch.randn(1, 4, 9, 9, device=device)).requires_grad_()
    out = compiled(x)
    out.backward()
    x64 = x.detach().double().requires_grad_()
    paper_relu_lrn_pool(x64, lrn, pool, 2).sum().backward()
    assert abs(out.item() - f(x64.detach().float()).item()) < 1e-4 * max(1.0, abs(out.item()))
    assert rel_err(x.grad, x64.grad) < 1e-5


def test_rows_configs_fit_the_pool():
    """The GPU-only autotune configs (not run by the interpreter): every band holds its pool."""
    for k, s, w in ((3, 2, 55), (3, 2, 27), (2, 2, 7), (4, 3, 12), (7, 1, 40)):
        iwp, bow = lrn_pool_rows.footprint(w, PoolParams(k, s))
        assert iwp >= (PoolParams(k, s).out_size(w) - 1) * s + k and bow >= 1
        cfgs = lrn_pool_rows._configs(k, s, iwp)
        assert cfgs
        for c in cfgs:
            ir, boh, bohp = c.kwargs["IR"], c.kwargs["BOH"], c.kwargs["BOHP"]
            assert boh >= 1 and (boh - 1) * s + k <= ir and boh <= bohp < 2 * boh


def test_rows_backward_falls_back_to_gather(device):
    """Geometries the rows backward does not take (no pool, too wide) run lrn_pool_bwd."""
    x = torch.randn(1, 2, 3, 200, device=device)
    assert not lrn_pool_bwd_rows.supported(x, PoolParams(3, 2))
    assert not lrn_pool_bwd_rows.supported(x[..., :64], None)
    assert not lrn_pool_bwd_rows.supported(x[..., :64], PoolParams(5, 2))  # K > 2*S
    assert lrn_pool_bwd_rows.supported(x[..., :64], PoolParams(3, 2, 1))
    lrn, pool = LRNParams(3, 0.1, 0.75, 2.0), PoolParams(3, 2)
    x64 = x.double().requires_grad_()
    want = paper_relu_lrn_pool(x64, lrn, pool)
    y, idx = torch.empty(want.shape, device=device), torch.empty(want.shape, dtype=torch.int8,
                                                                   device=device)
    lrn_pool.launch_forward(x, y, idx, lrn, pool, 1)
    dy = torch.randn(want.shape, device=device)
    want.backward(dy.double())
    dx = torch.full_like(x, float("nan"))
    lrn_pool_bwd_rows.launch_backward(x, dy, idx, dx, lrn, pool, 1)
    assert rel_err(dx, x64.grad) < 1e-5


def test_rows_backward_configs():
    """The GPU-only autotune configs of the rows backward: bands of ≤ 4096 elements."""
    for w in (7, 27, 55, 128):
        iwp = 1 << (w - 1).bit_length()
        cfgs = lrn_pool_bwd_rows._configs(iwp)
        assert cfgs and all(c.kwargs["BR"] * iwp <= 4096 for c in cfgs)


def test_tune_keys_name_kernel_arguments():
    """Triton's autotuner silently skips key names that are not arguments: a typo (or a renamed
    argument) would let inference and training share one tuning again."""
    kernels = {
        lrn_pool._fwd_kernel: lrn_pool.FWD_TUNE_KEY,
        lrn_pool_rows._rows_fwd_kernel: lrn_pool.FWD_TUNE_KEY,
        lrn_pool_bwd._bwd_kernel: [*lrn_pool.BWD_TUNE_KEY, "HAS_POOL"],
        lrn_pool_bwd_rows._bwd_rows_kernel: lrn_pool.BWD_TUNE_KEY,
    }
    for kernel, key in kernels.items():
        assert set(key) <= set(kernel.arg_names), (kernel, set(key) - set(kernel.arg_names))
    assert "SAVE_IDX" in lrn_pool.FWD_TUNE_KEY


def test_rows_falls_back_to_windows_when_too_wide(device):
    """Pooled widths beyond the rows kernel's footprint go to the windows kernel, correctly."""
    x = 2 * torch.randn(1, 3, 5, 300, device=device)
    lrn, pool = LRNParams(3, 0.1, 0.75, 2.0), PoolParams(3, 2)
    assert not lrn_pool_rows.supported(x, PoolParams(3, 2))
    want = paper_relu_lrn_pool(x.double(), lrn, pool)
    y = torch.full(want.shape, float("nan"), device=device)
    lrn_pool_rows.launch_forward(x, y, None, lrn, pool, 1)
    assert rel_err(y, want) < 1e-5


def test_auto_variant_rule_where_nothing_is_timed(
        device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" (the default) where nothing can be timed (see choose.py) follows the H200's
    conv1 figures: rows, the faster forward, for inference; windows, the faster forward whose
    argmax the backward reads, for training."""
    monkeypatch.setattr(choose, "can_measure", lambda *tensors: False)
    choose.forget()
    calls: list[str] = []
    for name, mod in (("rows", lrn_pool_rows), ("windows", lrn_pool)):
        real = mod.launch_forward

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(mod, "launch_forward", spy)
    monkeypatch.setattr(library, "VARIANT", "auto")
    x = torch.randn(1, 4, 9, 9, device=device)
    with torch.no_grad():
        fused_relu_lrn_pool(x, LRN_A, PoolParams(3, 2))
    assert calls == ["rows"]
    calls.clear()
    xg = x.clone().requires_grad_()
    fused_relu_lrn_pool(xg, LRN_A, PoolParams(3, 2)).sum().backward()
    assert calls == ["windows"]
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@pytest.mark.parametrize(
    ("pool", "cfg"),
    [(PoolParams(3, 2), R8), (PoolParams(3, 2, 1), R16S), (PoolParams(4, 3, 2), R8),
     (PoolParams(2, 2), R8U), (PoolParams(3, 2), {**R8, "IR": 4, "num_warps": 1})],
    ids=["3x3s2", "3x3s2-pad1", "4x4s3-pad2", "2x2s2", "3x3s2-1-row-bands"],
)  # fmt: skip
def test_argmax_is_max_pool2d_first_maximum_under_ties(device, variant, pool, cfg):
    """The saved argmax is F.max_pool2d's choice (the first maximum in row-major window order)
    when windows hold equal values: small integers, relu → pool, so ties are exact.  3x3/2 takes
    the rows kernel's even/odd split path, the others its general gather path."""
    x = torch.randint(-2, 3, (2, 5, 11, 13), device=device).float()
    _, want_flat = torch.nn.functional.max_pool2d(
        x.relu().cpu(), pool.size, pool.stride, pool.pad, return_indices=True
    )  # flat index into each H x W plane
    oh, ow = want_flat.shape[2:]
    top = torch.arange(oh)[:, None] * pool.stride - pool.pad  # window origins
    left = torch.arange(ow)[None, :] * pool.stride - pool.pad
    want = (want_flat // x.shape[3] - top) * pool.size + (want_flat % x.shape[3] - left)
    y = torch.full(want.shape, float("nan"), device=device)
    idx = torch.full(want.shape, -7, dtype=torch.int8, device=device)
    launch = lrn_pool_rows.launch_forward if variant == "rows" else lrn_pool.launch_forward
    launch(x, y, idx, None, pool, 1, config=cfg if variant == "rows" else None)
    assert torch.equal(idx.cpu().long(), want)


def test_map_narrower_than_the_pool_has_zero_gradient(device, variant, bwd_variant):
    """A 1-pixel-wide map under a 3x3 pool pools to nothing: an empty output, and a backward
    (autograd still calls it) that writes zeros rather than failing."""
    x = torch.randn(1, 2, 5, 1, device=device, requires_grad=True)
    y = fused_relu_lrn_pool(x, LRN_A, PoolParams(3, 2))
    assert y.shape == (1, 2, 2, 0)
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))
