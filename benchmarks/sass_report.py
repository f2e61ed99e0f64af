"""What the fused kernels compile to on a Hopper GPU, read without one.

For every autotune configuration of the four kernels (forwards "windows" and "rows", backwards
"gather" and "rows"), on AlexNet's conv1 and conv2 blocks, this compiles the kernel for sm_90
with Triton's own ptxas (no GPU, no driver) exactly as a launch would call it (the launchers run
on meta tensors and hand their arguments to a recorder instead of a GPU), then reads the SASS:
registers, spills, shared memory, resident warps per SM, and the instructions of the channel
loop (the loop every program runs once per channel: per-step cost x channels x programs is
nearly all of a kernel's work).

Why: measured on an H200, these kernels run at 3-9x their bandwidth floor, but neither their
arithmetic nor their bytes explain it; what limits them is how many instructions a step issues
and how much memory each SM keeps in flight (resident warps, and whether the loop's loads are
prefetched: cp.async, "LDGSTS" in SASS, which Triton's pipeliner emits for tl.range loops with
num_stages > 1).  This shows both before GPU time is spent.  "issue µs" is the channel loops'
warp instructions / (132 SMs x 4 schedulers x 1.98 GHz, an H100/H200 SXM at boost clock): the
time if every scheduler issued every cycle, a lower bound and not a prediction.

    python benchmarks/sass_report.py [--only conv1:fp32 ...] [--out FILE] [--check] [--pipelined]

--check exits 1 unless every fp32 configuration with STAGES > 1 prefetches its channel loop's
loads with cp.async (the tests run it: a change that defeats the pipeliner fails without a GPU).
bf16 is not checked: Triton pipelines only loads of at least 4 contiguous bytes, and a plane
masked at an odd width (55, 27) gives 2-byte bf16 loads, so there STAGES > 1 compiles to the
same code as STAGES = 1.
Needs triton with its NVIDIA backend (any platform); not the CPU interpreter.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("sass_report compiles kernels for sm_90: unset TRITON_INTERPRET")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the kernels' default; 3.9 warns if unset

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from alexnetc.backends.kernels import (
    LRNParams,
    PoolParams,
    lrn_pool,
    lrn_pool_bwd,
    lrn_pool_bwd_rows,
    lrn_pool_rows,
)

TARGET = GPUTarget("cuda", 90, 32)
SMS, SCHEDULERS, CLOCK = 132, 4, 1.98e9  # H100/H200 SXM
REGS_PER_SM, SMEM_PER_SM, WARPS_PER_SM = 65536, 228 * 1024, 64
SHAPES = {"conv1": (128, 96, 55, 55), "conv2": (128, 256, 27, 27)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LRN = LRNParams(5, 1e-4, 0.75, 2.0)
POOL = PoolParams(3, 2, 0)
TOWERS = 2
OPTIONS = ("num_warps", "num_stages", "maxnreg")
POINTER = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16",
           torch.int8: "*i8"}


@dataclass
class Launch:
    """One recorded kernel launch: what Triton would compile and how many programs run."""

    kernel: Any
    programs: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Recorder:
    """Stands in for torch.library.wrap_triton: ``wrap(kernel)[grid](*args, **kw)`` records."""

    def __init__(self) -> None:
        self.launches: list[Launch] = []

    def __call__(self, kernel: Any) -> Recorder:
        self._kernel = kernel
        return self

    def __getitem__(self, grid: Callable[[dict[str, Any]], tuple[int]]) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            programs = math.prod(grid(kwargs))
            self.launches.append(Launch(self._kernel, programs, args, kwargs))

        return launch


def compile_sass(launch: Launch) -> str:
    """SASS of the launch compiled for sm_90, with the launcher's specialisations: ints equal
    to 1 become constants (Triton specialises them), FAST (PTX approximations) is on."""
    fn = launch.kernel
    options = {k: v for k, v in launch.kwargs.items() if k in OPTIONS and v}
    consts = {k: v for k, v in launch.kwargs.items() if k not in OPTIONS}
    consts["FAST"] = True
    sig: dict[str, str] = {}
    for name, value in zip(fn.arg_names, launch.args, strict=False):
        if isinstance(value, torch.Tensor):
            sig[name] = POINTER[value.dtype]
        elif isinstance(value, bool) or (isinstance(value, int) and value == 1):
            consts[name] = value
        elif isinstance(value, int):
            sig[name] = "i32" if abs(value) < 2**31 else "i64"
        elif isinstance(value, float):
            consts[name] = value  # alpha, beta, k are constexpr parameters
    sig.update({name: "constexpr" for name in consts})
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                              target=TARGET, options=options)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True)
        usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True,
                               check=True)
    regs = re.search(r"REG:(\d+)", usage.stdout)
    head = f"// shared {int(compiled.metadata.shared)} regs {regs.group(1) if regs else 0}\n"
    return head + sass.stdout


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


@dataclass
class LoopStats:
    """SASS of one compiled kernel: registers, shared memory, and its channel loop."""

    regs: int
    shared: int
    spills: int  # local-memory loads and stores
    body: collections.Counter[str]  # opcode -> count, in the channel loop

    @property
    def instructions(self) -> int:
        return sum(self.body.values())

    def count(self, *prefixes: str) -> int:
        return sum(n for op, n in self.body.items() if op.startswith(prefixes))


def loop_stats(sass: str) -> LoopStats:
    """The channel loop is the backward branch enclosing the most instructions."""
    instrs = [(int(a, 16), op, rest) for a, op, rest in _INSTR.findall(sass)]
    loops = []
    for addr, op, rest in instrs:
        target = re.search(r"0x([0-9a-f]+)", rest)
        if op.startswith("BRA") and target and int(target.group(1), 16) <= addr:
            loops.append((int(target.group(1), 16), addr))
    lo, hi = max(loops, key=lambda r: r[1] - r[0]) if loops else (0, 1 << 62)
    body = collections.Counter(op.split(".")[0] if op.startswith(("LDG", "STG")) else op
                               for a, op, _ in instrs if lo <= a <= hi)
    head = re.search(r"// shared (\d+) regs (\d+)", sass)
    assert head, "compile_sass output"
    spills = sum(1 for _, op, _ in instrs if op.startswith(("LDL", "STL")))
    return LoopStats(int(head.group(2)), int(head.group(1)), spills, body)


def resident_warps(regs: int, shared: int, num_warps: int) -> int:
    """Warps per SM: registers are granted per warp in 256-register units (8 per thread)."""
    per_warp = math.ceil(regs / 8) * 8 * 32
    by_regs = REGS_PER_SM // (per_warp * num_warps)
    by_smem = SMEM_PER_SM // (shared + 1024) if shared else 32
    ctas = min(by_regs, by_smem, WARPS_PER_SM // num_warps, 32)
    return ctas * num_warps


@dataclass
class Case:
    kernel: str
    shape: str
    dtype: str
    argmax: bool
    config: dict[str, Any]
    launch: Launch
    steps: int  # channel-loop iterations, all programs together


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _config_dict(cfg: Any) -> dict[str, Any]:
    out = dict(cfg.kwargs, num_warps=cfg.num_warps)
    if getattr(cfg, "maxnreg", None):
        out["maxnreg"] = cfg.maxnreg
    return out


def cases(shape_name: str, dtype_name: str) -> Iterator[Case]:
    """Every (kernel, configuration) the autotuners would try on this block."""
    n, c, h, w = SHAPES[shape_name]
    dtype = DTYPES[dtype_name]
    _, _, _, oh, ow = lrn_pool.pool_geometry(h, w, POOL)
    x, y = _meta((n, c, h, w), dtype), _meta((n, c, oh, ow), dtype)
    idx = _meta((n, c, oh, ow), torch.int8)
    cpt = c // TOWERS
    lrn_args = (LRN, POOL, TOWERS)
    iwp, _ = lrn_pool_rows.footprint(w, POOL)
    forwards = {
        "windows": (lrn_pool.launch_forward, [_config_dict(cf) for cf in lrn_pool._FWD_CONFIGS]),
        "rows": (lrn_pool_rows.launch_forward,
                 [_config_dict(cf)
                  for cf in lrn_pool_rows._configs(POOL.size, POOL.stride, iwp)]),
    }
    for name, (launch_fn, configs) in forwards.items():
        for argmax in (False, True):
            for cfg in configs:
                rec = Recorder()
                launch_fn(x, y, idx if argmax else None, *lrn_args, wrap=rec,
                          config=_rows_config(cfg) if name == "rows" else cfg)
                (launch,) = rec.launches
                steps = _steps(launch.programs, cpt, cfg["CB"], 0)
                yield Case(name, shape_name, dtype_name, argmax, cfg, launch, steps)
    backwards = {
        "gather": (lrn_pool_bwd.launch_backward,
                   [_config_dict(cf) for cf in lrn_pool_bwd._BWD_CONFIGS]),
        "rows": (lrn_pool_bwd_rows.launch_backward,
                 [_config_dict(cf) for cf in lrn_pool_bwd_rows._configs(iwp)]),
    }
    for name, (backward_fn, configs) in backwards.items():  # (x, dy, idx, dx, ...)
        for cfg in configs:
            rec = Recorder()
            backward_fn(x, y, idx, x, *lrn_args, wrap=rec, config=cfg)
            (launch,) = rec.launches
            steps = _steps(launch.programs, cpt, cfg["CB"], 2 * (LRN.size // 2) * 2)
            yield Case(name + "-bwd", shape_name, dtype_name, True, cfg, launch, steps)


def _steps(programs: int, cpt: int, cb: int, per_chunk: int) -> int:
    """Channel-loop iterations of all programs: each (sample, tower, tile) walks the tower's
    channels once, in chunks of CB, each chunk with ``per_chunk`` more (the backward's lag)."""
    chunks = math.ceil(cpt / cb)
    return programs // chunks * (cpt + chunks * per_chunk)


def _rows_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The rows forward takes IR (it derives BOH/BOHP itself)."""
    return {k: v for k, v in cfg.items() if k not in ("BOH", "BOHP")}


def describe(cfg: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("BOH", "BOHP"))


def report(
    only: list[str] | None, check: bool, pipelined: bool = False
) -> tuple[list[str], list[str]]:
    lines = [
        "| block | dtype | kernel | argmax | config | regs | spills | smem KiB | warps/SM "
        "| instr/step | MUFU | shuffles | shared ld/st | barriers | cp.async | issue µs |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    failures = []
    for shape in SHAPES:
        for dtype in DTYPES:
            if only and f"{shape}:{dtype}" not in only:
                continue
            for case in cases(shape, dtype):
                if pipelined and case.config.get("STAGES", 1) < 2:
                    continue
                st = loop_stats(compile_sass(case.launch))
                nw = case.config["num_warps"]
                warps = resident_warps(st.regs, st.shared, nw)
                # An UNROLL config's loop body holds one ring period (2*HALF) of steps.
                per_loop = 2 * (LRN.size // 2) if case.config.get("UNROLL") else 1
                per_step = st.instructions / per_loop
                issue = case.steps * per_step * nw / (SMS * SCHEDULERS * CLOCK) * 1e6
                asyncs = st.count("LDGSTS")
                row = (
                    f"| {shape} | {dtype} | {case.kernel} | {'yes' if case.argmax else 'no'} "
                    f"| {describe(case.config)} | {st.regs} | {st.spills} "
                    f"| {st.shared / 1024:.1f} | {warps} | {per_step:.0f} "
                    f"| {st.count('MUFU') / per_loop:.0f} | {st.count('SHFL') / per_loop:.0f} "
                    f"| {st.count('LDS', 'STS', 'LDSM', 'STSM') / per_loop:.0f} "
                    f"| {st.count('BAR') / per_loop:.0f} | {asyncs / per_loop:.0f} | {issue:.0f} |"
                )
                print(row, flush=True)
                lines.append(row)
                if check and dtype == "fp32" and case.config.get("STAGES", 1) > 1 and not asyncs:
                    failures.append(f"{shape}:{dtype} {case.kernel} {describe(case.config)}: "
                                    "STAGES > 1 but the channel loop issues no cp.async")
    return lines, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="BLOCK:DTYPE",
                    choices=[f"{b}:{d}" for b in SHAPES for d in DTYPES],
                    help=f"blocks and dtypes, e.g. conv1:fp32 (of {list(SHAPES)} x "
                         f"{list(DTYPES)})")
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every fp32 STAGES > 1 configuration prefetches (cp.async)")
    ap.add_argument("--pipelined", action="store_true",
                    help="only the configurations with STAGES > 1")
    a = ap.parse_args()
    print(f"triton {triton.__version__}, target sm_90", flush=True)
    lines, failures = report(a.only, a.check, a.pipelined)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"triton {triton.__version__}, sm_90\n\n" + "\n".join(lines) + "\n")
    for msg in failures:
        print("FAIL", msg, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
