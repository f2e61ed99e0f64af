"""The paper's data augmentation (section 4.1), done per batch on the training device.

Each image arrives as uint8 C x S x S. Training takes a random h x w crop, flips it with
probability 1/2, adds PCA colour noise (Σ_i α_i λ_i p_i with α_i ~ N(0, σ) drawn once per
image per epoch) and subtracts the per-channel training mean. Evaluation takes the centre
crop, or the paper's ten crops (four corners, centre, and their mirror images).

Random numbers come from a CPU `torch.Generator` owned by the caller, so a run draws the
same crops on any device and `--resume` can restore the stream exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PixelStats:
    """Per-channel mean and RGB-covariance eigen-decomposition of the training pixels.

    The mean is in grey levels (0..255); the eigenvalues are of the covariance of intensities
    scaled to [0, 1], the convention behind the published ImageNet values (≈ 0.2175, 0.0188,
    0.0045). An eigenvalue is a variance, so in 0..255 units α·λ would grow with 255² rather
    than 255 and the "colour noise" would swamp the image by ~255 times.
    """

    mean: Tensor  # C, grey levels
    eigvals: Tensor  # C, ascending, ≥ 0, in [0, 1] intensity units
    eigvecs: Tensor  # C x C, column i is the eigenvector of eigvals[i]

    def as_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "eigvals": self.eigvals, "eigvecs": self.eigvecs}

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> PixelStats:
        return cls(d["mean"], d["eigvals"], d["eigvecs"])


def pixel_stats(batches: Iterable[Tensor]) -> PixelStats:
    """Mean and covariance over every pixel of the given N x C x S x S uint8 batches.

    Accumulated in float64 sums so it is exact for any number of images, not a running
    estimate; the eigen-decomposition of the C x C covariance gives the PCA directions.
    """
    count = 0
    total: Tensor | None = None
    outer: Tensor | None = None
    for x in batches:
        p = x.to(torch.float64).permute(1, 0, 2, 3).reshape(x.shape[1], -1)  # C x (N·S·S)
        total = p.sum(1) if total is None else total + p.sum(1)  # C
        outer = p @ p.T if outer is None else outer + p @ p.T  # C x C
        count += p.shape[1]
    if total is None or outer is None or count == 0:
        raise ValueError("no training images to compute pixel statistics from")
    return stats_from_sums(total, outer, count)


def stats_from_sums(total: Tensor, outer: Tensor, count: int) -> PixelStats:
    """The statistics from the pixels' sum (C), the sum of their outer products (C x C) and
    their count, float64 holding exact integers: `alexnetc prepare` sums while converting,
    and gets what `pixel_stats` gets from the same images, to the bit."""
    mean = total / count  # C
    cov = (outer / count - torch.outer(mean, mean)) / 255.0**2  # C x C, [0, 1] units
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return PixelStats(mean.float(), eigvals.clamp(min=0).float(), eigvecs.float())


class Augmenter:
    """Turns uint8 batches into the network's float input, for training or evaluation."""

    def __init__(self, stats: PixelStats, crop: tuple[int, int], *, flip: bool, pca: float,
                 subtract_mean: bool, device: torch.device):
        self.crop = crop
        self.flip = flip
        self.pca = pca
        self.device = device
        mean = stats.mean if subtract_mean else torch.zeros_like(stats.mean)
        self.mean = mean.to(device).view(1, -1, 1, 1)  # 1 x C x 1 x 1
        self.eigvals = stats.eigvals.to(device)  # C
        self.eigvecs = stats.eigvecs.to(device)  # C x C

    def _gather(self, x: Tensor, top: Tensor, left: Tensor, mirror: Tensor) -> Tensor:
        """Per-image crops (and mirrors) by index arithmetic: one gather for the whole batch."""
        h, w = self.crop
        dev = x.device
        rows = top.to(dev)[:, None] + torch.arange(h, device=dev)  # N x h
        step = torch.arange(w, device=dev)  # w
        cols = torch.where(mirror.to(dev)[:, None], w - 1 - step, step) + left.to(dev)[:, None]
        n = torch.arange(x.shape[0], device=dev)
        c = torch.arange(x.shape[1], device=dev)
        return x[n[:, None, None, None], c[None, :, None, None], rows[:, None, :, None],
                 cols[:, None, None, :]]  # N x C x h x w

    def _finish(self, x: Tensor, alpha: Tensor | None = None) -> Tensor:
        y = x.to(torch.float32) - self.mean  # N x C x h x w
        if alpha is not None:
            shift = 255.0 * (alpha.to(y.device) * self.eigvals) @ self.eigvecs.T  # N x C
            y = y + shift[:, :, None, None]
        return y

    def train(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Random crop, flip and colour noise: N x C x S x S uint8 → N x C x h x w float."""
        x = x.to(self.device, non_blocking=True)
        n, _, s_h, s_w = x.shape
        h, w = self.crop
        top = torch.randint(0, s_h - h + 1, (n,), generator=gen)  # N
        left = torch.randint(0, s_w - w + 1, (n,), generator=gen)  # N
        flips = torch.rand(n, generator=gen) < 0.5  # N; drawn either way: same stream
        mirror = flips if self.flip else torch.zeros(n, dtype=torch.bool)
        alpha = torch.randn(n, x.shape[1], generator=gen) * self.pca if self.pca > 0 else None
        return self._finish(self._gather(x, top, left, mirror), alpha)

    def centre(self, x: Tensor) -> Tensor:
        """The centre crop: N x C x S x S uint8 → N x C x h x w float."""
        x = x.to(self.device, non_blocking=True)
        h, w = self.crop
        t, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
        return self._finish(x[:, :, t:t + h, left:left + w])

    def ten_crop(self, x: Tensor) -> Tensor:
        """Four corners and centre, and their mirrors: N x C x S x S → 10 x N x C x h x w."""
        x = x.to(self.device, non_blocking=True)
        n, _, s_h, s_w = x.shape
        h, w = self.crop
        corners = [(0, 0), (0, s_w - w), (s_h - h, 0), (s_h - h, s_w - w),
                   ((s_h - h) // 2, (s_w - w) // 2)]
        crops = []
        for mirror in (False, True):
            for t, left in corners:
                crops.append(self._gather(x, torch.full((n,), t), torch.full((n,), left),
                                          torch.full((n,), mirror)))
        return self._finish(torch.stack(crops).flatten(0, 1)).view(10, n, *crops[0].shape[1:])
