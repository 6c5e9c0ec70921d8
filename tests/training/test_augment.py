"""Batched on-device augmentations: per-image randomness, range, shape, determinism, 1 channel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslkit.training.augment import Augment, adjust_hue, build_augment, eval_transform, rgb_to_grayscale

BT_AUG = {"crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3], "flip_prob": 0.5, "jitter_prob": 0.8,
          "jitter": [0.4, 0.4, 0.2, 0.1], "grayscale_prob": 0.2, "blur_prob": [1.0, 0.1],
          "blur_sigma": [0.1, 2.0], "blur_kernel_frac": 0.1, "solarize_prob": [0.0, 0.2]}


def run_config(channels=3, size=16, aug=None):
    return {"augment": dict(aug or BT_AUG), "image_size": size,
            "data": {"mean": [0.5] * channels, "std": [0.25] * channels}}


def images(n=6, h=20, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(n, h, h, c), dtype=np.uint8))


@pytest.mark.parametrize("channels", [3, 1])
def test_shape_range_and_determinism(channels):
    rc = run_config(channels)
    aug = build_augment(rc, "cpu")
    x = images(c=channels)
    out = aug(x, torch.Generator().manual_seed(1), view=0)
    assert out.shape == (6, channels, 16, 16) and out.dtype == torch.float32
    raw = out * 0.25 + 0.5  # undo the normalisation: pixels stay in [0, 1]
    assert float(raw.min()) >= -1e-6 and float(raw.max()) <= 1 + 1e-6
    again = aug(x, torch.Generator().manual_seed(1), view=0)
    assert torch.equal(out, again)
    other = aug(x, torch.Generator().manual_seed(2), view=0)
    assert not torch.allclose(out, other)


def test_independent_parameters_per_image_and_positive_pairs():
    aug = build_augment(run_config(3), "cpu")
    one = images(n=1)
    x = one.expand(16, -1, -1, -1).contiguous()       # the same image 16 times
    g = torch.Generator().manual_seed(3)
    v1 = aug(x, g, view=0)
    v2 = aug(x, g, view=1)                               # same stream: a second, different view
    flat = v1.flatten(1)
    dists = torch.cdist(flat, flat)
    assert float(dists[~torch.eye(16, dtype=torch.bool)].min()) > 1e-3   # every copy differs
    assert not torch.allclose(v1, v2)


def test_identity_settings_reproduce_resize_and_normalise():
    ident = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "flip_prob": 0.0, "jitter_prob": 0.0,
             "jitter": [0.4, 0.4, 0.2, 0.1], "grayscale_prob": 0.0, "blur_prob": [0.0, 0.0],
             "blur_sigma": [0.1, 2.0], "blur_kernel_frac": 0.1, "solarize_prob": [0.0, 0.0]}
    rc = run_config(3, size=20, aug=ident)
    x = images()
    out = build_augment(rc, "cpu")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, eval_transform(x, rc), atol=1e-5)


def test_flip_and_solarize_always():
    aug_cfg = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "flip_prob": 1.0, "jitter_prob": 0.0,
               "jitter": [0.0, 0.0, 0.0, 0.0], "grayscale_prob": 0.0, "blur_prob": [0.0, 0.0],
               "blur_sigma": [0.1, 2.0], "blur_kernel_frac": 0.1, "solarize_prob": [0.0, 1.0]}
    rc = {"augment": aug_cfg, "image_size": 20, "data": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    x = images()
    aug = Augment(aug_cfg, 20, [0.0] * 3, [1.0] * 3)
    base = eval_transform(x, rc)
    flipped = aug(x, torch.Generator().manual_seed(0), view=0)
    assert torch.allclose(flipped, base.flip(-1), atol=1e-5)
    sol = aug(x, torch.Generator().manual_seed(0), view=1)
    want = torch.where(base.flip(-1) >= 0.5, 1 - base.flip(-1), base.flip(-1))
    assert torch.allclose(sol, want, atol=1e-5)


def test_blur_preserves_mean_of_constant_image_and_smooths():
    aug_cfg = dict(BT_AUG, crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_prob=0.0, jitter_prob=0.0,
                   grayscale_prob=0.0, blur_prob=[1.0, 1.0], solarize_prob=[0.0, 0.0], blur_kernel_frac=0.3)
    aug = Augment(aug_cfg, 20, [0.0] * 3, [1.0] * 3)
    const = torch.full((2, 20, 20, 3), 100, dtype=torch.uint8)
    expected = torch.full((2, 3, 20, 20), 100 / 255)
    assert torch.allclose(aug(const, torch.Generator().manual_seed(0)), expected, atol=1e-5)
    x = images()
    out = aug(x, torch.Generator().manual_seed(0))
    assert float(out.std()) < float((x.float() / 255).std())


def test_grayscale_and_hue_helpers():
    x = torch.rand(4, 3, 5, 5)
    assert torch.allclose(adjust_hue(x, torch.zeros(4)), x, atol=1e-5)
    assert torch.allclose(adjust_hue(adjust_hue(x, torch.full((4,), 0.3)), torch.full((4,), -0.3)), x, atol=1e-4)
    g = rgb_to_grayscale(x)
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])


def test_bad_input_is_rejected():
    aug = build_augment(run_config(3), "cpu")
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 8, 8, 3), torch.Generator())
    with pytest.raises(ValueError, match="channels"):
        aug(images(c=1), torch.Generator())
