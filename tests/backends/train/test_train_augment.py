"""Crops, flips, the 10 crops, and the PCA colour noise's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnetc.backends.train.augment import Augmenter, PixelStats, pixel_stats

CPU = torch.device("cpu")


def ramp(n: int = 2, c: int = 3, s: int = 8) -> torch.Tensor:
    """Images whose every pixel is distinct, so a crop's position can be read back."""
    return torch.arange(n * c * s * s, dtype=torch.int64).remainder(256).to(torch.uint8).view(
        n, c, s, s)


def flat_stats(c: int = 3) -> PixelStats:
    return PixelStats(torch.zeros(c), torch.zeros(c), torch.eye(c))


def test_pixel_stats_match_numpy_over_all_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=g)
    st = pixel_stats([x[:2], x[2:]])  # in two batches: the sums are exact
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float64)
    np.testing.assert_allclose(st.mean.numpy(), pixels.mean(0), rtol=1e-6)
    cov = np.cov(pixels / 255.0, rowvar=False, bias=True)
    recon = st.eigvecs.double() @ torch.diag(st.eigvals.double()) @ st.eigvecs.double().T
    np.testing.assert_allclose(recon.numpy(), cov, rtol=1e-4, atol=1e-7)


def test_grey_images_have_one_colour_direction() -> None:
    x = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8).expand(-1, 3, -1, -1)
    st = pixel_stats([x])
    assert st.eigvals[:2].abs().max() < 1e-6 * st.eigvals[2]
    torch.testing.assert_close(st.eigvecs[:, 2].abs(), torch.full((3,), 3 ** -0.5))


def test_pca_noise_has_the_papers_covariance() -> None:
    """shift = 255·Σ α_i λ_i p_i with α ~ N(0, σ): Cov = 255²σ²·P diag(λ²) Pᵀ, same over pixels."""
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 0.2, 0.1], [0.3, 1.0, 0.0], [0.2, 0.1, 1.0]]))
    lam = torch.tensor([0.01, 0.03, 0.2])
    sigma = 0.1
    aug = Augmenter(PixelStats(torch.zeros(3), lam, q), (4, 4), flip=False, pca=sigma,
                    subtract_mean=False, device=CPU)
    x = torch.full((20_000, 3, 4, 4), 100, dtype=torch.uint8)
    out = aug.train(x, torch.Generator().manual_seed(1))  # N x 3 x 4 x 4
    per_image = out[:, :, 0, 0] - 100.0  # N x 3
    assert torch.equal(out - 100.0, per_image[:, :, None, None].expand_as(out))  # one α per image
    cov = torch.cov(per_image.T.double())
    expected = (255 * sigma) ** 2 * q.double() @ torch.diag(lam.double() ** 2) @ q.double().T
    torch.testing.assert_close(cov, expected, rtol=0.05, atol=0.02)
    assert per_image.mean(0).abs().max() < 0.1


def test_random_crops_are_windows_of_the_image_and_flips_mirror_them() -> None:
    x = ramp(64, 2, 8)
    aug = Augmenter(flat_stats(2), (5, 5), flip=True, pca=0.0, subtract_mean=False, device=CPU)
    out = aug.train(x, torch.Generator().manual_seed(0)).to(torch.uint8)  # 64 x 2 x 5 x 5
    seen_offsets, mirrored = set(), 0
    for i in range(64):
        match = [(t, left, m) for t in range(4) for left in range(4) for m in (False, True)
                 if torch.equal(out[i], (x[i, :, t:t + 5, left:left + 5].flip(2) if m
                                         else x[i, :, t:t + 5, left:left + 5]))]
        assert len(match) == 1
        seen_offsets.add(match[0][:2])
        mirrored += match[0][2]
    assert len(seen_offsets) > 8 and 16 < mirrored < 48


def test_same_generator_state_gives_same_batch() -> None:
    x = ramp(8)
    aug = Augmenter(flat_stats(), (5, 5), flip=True, pca=0.1, subtract_mean=True, device=CPU)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(aug.train(x, g1), aug.train(x, g2))


def test_mean_is_subtracted_per_channel() -> None:
    st = PixelStats(torch.tensor([10.0, 20.0, 30.0]), torch.zeros(3), torch.eye(3))
    aug = Augmenter(st, (2, 2), flip=False, pca=0.0, subtract_mean=True, device=CPU)
    out = aug.centre(torch.full((1, 3, 4, 4), 50, dtype=torch.uint8))
    assert out[0, :, 0, 0].tolist() == [40.0, 30.0, 20.0]


def test_centre_and_ten_crops() -> None:
    x = ramp(3, 3, 9)
    aug = Augmenter(flat_stats(), (5, 5), flip=True, pca=0.1, subtract_mean=False, device=CPU)
    centre = aug.centre(x)
    assert torch.equal(centre, x[:, :, 2:7, 2:7].float())
    ten = aug.ten_crop(x)  # 10 x 3 x 3 x 5 x 5
    assert ten.shape == (10, 3, 3, 5, 5)
    expect = [x[:, :, :5, :5], x[:, :, :5, 4:], x[:, :, 4:, :5], x[:, :, 4:, 4:],
              x[:, :, 2:7, 2:7]]
    for i, e in enumerate(expect):
        assert torch.equal(ten[i], e.float())
        assert torch.equal(ten[5 + i], e.flip(3).float())


@pytest.mark.parametrize("size", [(5, 5), (9, 9)])
def test_crop_of_full_size_or_smaller(size: tuple[int, int]) -> None:
    x = ramp(2, 3, 9)
    aug = Augmenter(flat_stats(), size, flip=False, pca=0.0, subtract_mean=False, device=CPU)
    assert aug.train(x, torch.Generator()).shape == (2, 3, *size)
