"""PNG figures of a run: loss and error curves from metrics.csv, and conv1's kernels (Figure 3).

matplotlib is optional (`pip install alexnetc[plot]`) and used with the Agg backend, so this
works on a machine without a display. Figures are saved through alexnetc.atomic: a full disk
leaves the previous picture, not a truncated one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import Tensor

from alexnetc import atomic
from alexnetc.backends.train import metrics

CURVES = "curves.png"
KERNELS = "kernels.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, out: Path) -> Path:
    """Write `fig` to `out` (its suffix picks the format) and free it, even when that fails."""
    try:
        atomic.write_with(out, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return out


def plot_curves(run_dir: Path) -> Path:
    """Loss (train, val) and top-1/top-5 validation error per epoch, side by side."""
    path = run_dir / metrics.FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (has the run finished an epoch?)")
    rows = metrics.read(path)
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_loss.set_yscale("log")
    for key, label in (("train_top1_err", "train top-1"), ("val_top1_err", "val top-1"),
                       ("val_top5_err", "val top-5")):
        ax_err.plot(epochs, [100 * r.get(key, math.nan) for r in rows], marker="o", label=label)
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error rate")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(plt, fig, run_dir / CURVES)


def plot_kernels(kernels: Tensor, towers: int, out: Path) -> Path:
    """A grid of K x C x k x k kernels, each scaled to its own range; one block per tower.

    Like the paper's Figure 3: the kernels of tower 1 above those of tower 2.
    """
    plt = _pyplot()
    k = kernels.shape[0]
    per_tower = k // towers if towers and k % towers == 0 else k
    blocks = k // per_tower
    cols = min(per_tower, 16)
    rows_per_block = math.ceil(per_tower / cols)
    fig, axes = plt.subplots(blocks * rows_per_block, cols, squeeze=False,
                             figsize=(cols * 0.6, blocks * rows_per_block * 0.6 + 0.1 * blocks))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        w = kernels[i]  # C x k x k
        lo, hi = float(w.min()), float(w.max())
        img = ((w - lo) / (hi - lo if hi > lo else 1.0)).permute(1, 2, 0)  # k x k x C
        block, j = divmod(i, per_tower)
        ax = axes[block * rows_per_block + j // cols][j % cols]
        ax.imshow(img.numpy() if img.shape[2] == 3 else img[:, :, 0].numpy(),
                  cmap="gray" if img.shape[2] != 3 else None, interpolation="nearest")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(plt, fig, out)


def write_figures(run_dir: Path, model: Any | None, net: Any | None) -> tuple[list[Path], str]:
    """What `train` and `plot` draw: the curves, and the first convolution's kernels when there
    is a model with one.  Returns the files written and a note on what was not drawn ("" if
    nothing was left out)."""
    from alexnetc.backends.train.model import first_layer_kernels

    written = [plot_curves(run_dir)]
    if model is None or net is None:
        return written, f"no {KERNELS}: the run has no checkpoint yet"
    kernels = first_layer_kernels(model, net)
    if kernels is None:
        return written, f"no {KERNELS}: {net.name} has no convolution"
    written.append(plot_kernels(kernels, net.towers, run_dir / KERNELS))
    return written, ""
