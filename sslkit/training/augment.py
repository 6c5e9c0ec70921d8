"""Batched image augmentations on the training device (SimCLR / Barlow Twins / BYOL pipeline).

Contract::

    aug = build_augment(run_config, device)     # an Augment
    v1 = aug(images, generator, view=0)         # images: uint8 N x H x W x C on `device`
    v2 = aug(images, generator, view=1)         # -> float32 N x C x S x S, normalised
    x = eval_transform(images, run_config)      # no augmentation: resize to S, normalise (probes)

Two calls on the same images with the same ``torch.Generator`` stream give a positive pair (the
second call draws fresh parameters). Every random parameter is drawn per image from
``generator`` only (on the generator's device), so a batch is deterministic under a seeded
generator and data loading never leaves the device. ``view`` selects the per-view probabilities
of the asymmetric pipelines (Barlow Twins/BYOL: blur 1.0/0.1, solarise 0.0/0.2).

Pipeline (torchvision semantics, in this order), configured by ``run_config['augment']``:

1. Random resized crop to S x S (``crop_scale`` area fraction, ``crop_ratio`` aspect ratio; 10
   tries per image as in torchvision, falling back to the whole image) and horizontal flip
   (``flip_prob``), both in one bilinear ``grid_sample``.
2. Colour jitter with probability ``jitter_prob``: brightness, contrast, saturation, hue factors
   ``jitter`` = [b, c, s, h] drawn per image, applied in a random order per image (as
   torchvision's ColorJitter). Saturation and hue do nothing to 1-channel images.
3. Grayscale with probability ``grayscale_prob``.
4. Gaussian blur with probability ``blur_prob[view]``, sigma ~ U(``blur_sigma``), kernel side
   ``blur_kernel_frac`` x S (odd, >= 3), separable.
5. Solarise with probability ``solarize_prob[view]``: x -> 1 - x where x >= 0.5.
6. Normalise with the dataset's per-channel ``run_config['data']['mean'/'std']`` (in [0, 1] units).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Augment", "build_augment", "eval_transform", "to_float_nchw", "rgb_to_grayscale",
           "adjust_hue"]

_GRAY = (0.299, 0.587, 0.114)


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x C -> float32 N x C x H x W in [0, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 N x H x W x C tensor, got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x 1 x H x W (ITU-R 601 luma for RGB; identity for one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v], dim=1).gather(1, i.unsqueeze(1)).squeeze(1)
    g = torch.stack([t, v, v, q, p, p], dim=1).gather(1, i.unsqueeze(1)).squeeze(1)
    b = torch.stack([p, p, t, v, v, q], dim=1).gather(1, i.unsqueeze(1)).squeeze(1)
    return torch.stack([r, g, b], dim=1)


def adjust_hue(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Shift the hue of N x 3 x H x W images in [0, 1] by ``delta`` (N, in turns, |delta| <= 0.5)."""
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + delta.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=gen.device)


def _bernoulli(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


def _view4(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


class Augment:
    """Callable batched augmentation; see the module docstring. Build with :func:`build_augment`."""

    def __init__(self, cfg: dict, image_size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu"):
        self.cfg = dict(cfg)
        self.size = int(image_size)
        self.device = torch.device(device)
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        lo, hi = self.cfg["crop_scale"]
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale must satisfy 0 < low <= high <= 1, got {self.cfg['crop_scale']}")

    # -- geometry -----------------------------------------------------------------------------
    def _crop_boxes(self, n: int, aspect: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Relative crop width/height (fractions of the image) and centres in [-1, 1], per image."""
        lo, hi = self.cfg["crop_scale"]
        rlo, rhi = self.cfg["crop_ratio"]
        tries = 10
        area = _uniform(n * tries, lo, hi, gen).view(n, tries)
        logr = _uniform(n * tries, math.log(rlo), math.log(rhi), gen).view(n, tries)
        ratio = torch.exp(logr)
        # fractions of width and height for an image of aspect W/H = aspect
        cw = torch.sqrt(area * ratio / aspect)
        ch = torch.sqrt(area * aspect / ratio)
        ok = (cw <= 1) & (ch <= 1)
        first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.full((n,), -1, device=ok.device))
        idx = first.clamp_min(0).unsqueeze(1)
        cw = torch.where(first >= 0, cw.gather(1, idx).squeeze(1), torch.ones(n, device=ok.device))
        ch = torch.where(first >= 0, ch.gather(1, idx).squeeze(1), torch.ones(n, device=ok.device))
        ux = torch.rand(n, generator=gen, device=gen.device)
        uy = torch.rand(n, generator=gen, device=gen.device)
        cx = (ux * (1 - cw) + cw / 2) * 2 - 1
        cy = (uy * (1 - ch) + ch / 2) * 2 - 1
        return cw, ch, cx, cy

    def _resized_crop_flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        cw, ch, cx, cy = self._crop_boxes(n, w / h, gen)
        flip = torch.where(_bernoulli(n, self.cfg["flip_prob"], gen), -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = cw * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [n, c, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # -- colour -------------------------------------------------------------------------------
    def _jitter(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]
        b, co, s, hu = self.cfg["jitter"]
        apply = _bernoulli(n, self.cfg["jitter_prob"], gen)
        fb = _uniform(n, max(0.0, 1 - b), 1 + b, gen)
        fc = _uniform(n, max(0.0, 1 - co), 1 + co, gen)
        fs = _uniform(n, max(0.0, 1 - s), 1 + s, gen)
        fh = _uniform(n, -hu, hu, gen)
        order = torch.argsort(torch.rand(n, 4, generator=gen, device=gen.device), dim=1)
        out = x
        for k in range(4):
            op = order[:, k]
            y = out
            if b > 0:
                y = torch.where(_view4(op == 0), (out * _view4(fb)).clamp(0, 1), y)
            if co > 0:
                m = rgb_to_grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
                y = torch.where(_view4(op == 1), ((out - m) * _view4(fc) + m).clamp(0, 1), y)
            if c == 3 and s > 0:
                g = rgb_to_grayscale(out)
                y = torch.where(_view4(op == 2), ((out - g) * _view4(fs) + g).clamp(0, 1), y)
            if c == 3 and hu > 0:
                y = torch.where(_view4(op == 3), adjust_hue(out, fh), y)
            out = y
        return torch.where(_view4(apply), out, x)

    def _grayscale(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        apply = _bernoulli(x.shape[0], self.cfg["grayscale_prob"], gen)
        if x.shape[1] == 1:
            return x
        return torch.where(_view4(apply), rgb_to_grayscale(x).expand_as(x), x)

    def _blur(self, x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        apply = _bernoulli(n, p, gen)
        slo, shi = self.cfg["blur_sigma"]
        sigma = _uniform(n, slo, shi, gen)
        if p <= 0:
            return x
        k = max(3, int(round(self.cfg["blur_kernel_frac"] * self.size)) // 2 * 2 + 1)
        r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        ker = torch.exp(-0.5 * (r.view(1, -1) / sigma.view(-1, 1)) ** 2)
        ker = ker / ker.sum(dim=1, keepdim=True)                       # n x k
        ker = ker.repeat_interleave(c, dim=0)                          # (n*c) x k
        y = x.reshape(1, n * c, h, w)
        y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect" if min(h, w) > k // 2 else "replicate")
        y = F.conv2d(y, ker.view(n * c, 1, 1, k), groups=n * c)
        y = F.conv2d(y, ker.view(n * c, 1, k, 1), groups=n * c)
        return torch.where(_view4(apply), y.view(n, c, h, w), x)

    def _solarize(self, x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
        apply = _bernoulli(x.shape[0], p, gen)
        return torch.where(_view4(apply) & (x >= 0.5), 1 - x, x)

    # -- entry point --------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, generator: torch.Generator, view: int = 0) -> torch.Tensor:
        """uint8 N x H x W x C -> float32 N x C x S x S augmented and normalised."""
        if view not in (0, 1):
            raise ValueError(f"view must be 0 or 1, got {view}")
        if images.shape[-1] != self.mean.shape[1]:
            raise ValueError(f"images have {images.shape[-1]} channels but the normalisation has "
                             f"{self.mean.shape[1]} (run_config['data']['mean'])")
        x = to_float_nchw(images.to(self.device))
        x = self._resized_crop_flip(x, generator)
        x = self._jitter(x, generator)
        x = self._grayscale(x, generator)
        x = self._blur(x, self.cfg["blur_prob"][view], generator)
        x = self._solarize(x, self.cfg["solarize_prob"][view], generator)
        return (x - self.mean) / self.std


def build_augment(run_config: dict, device: torch.device | str = "cpu") -> Augment:
    """The augmentation of a resolved run config (``augment``, ``image_size``, ``data.mean/std``)."""
    data = run_config["data"]
    return Augment(run_config["augment"], run_config["image_size"], data["mean"], data["std"], device)


def eval_transform(images: torch.Tensor, run_config: dict) -> torch.Tensor:
    """No augmentation: uint8 N x H x W x C -> float32 N x C x S x S, resized and normalised.

    Resizing is bilinear (antialiased when shrinking); runs on the images' device.
    """
    x = to_float_nchw(images)
    size = int(run_config["image_size"])
    if x.shape[-2:] != (size, size):
        shrink = x.shape[-1] > size or x.shape[-2] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    mean = torch.tensor(run_config["data"]["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(run_config["data"]["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
