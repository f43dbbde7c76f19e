"""Training augmentations, as the reference's (MONAI) transforms, on batched tensors (CPU or GPU).

``pad_crop`` (per item, in the dataset) pads an image to the ROI and cuts a random ROI-sized window;
``Augmenter`` then transforms a whole batch on the training device, in the reference's order: random
affine (rotation, independent scale per axis; bilinear image, nearest labels, border padding), flips,
Gaussian noise, gamma contrast, Gaussian smoothing, histogram shift, Gaussian sharpening; then two of
our own, off by default: intensity inversion and stain (per-channel colour) jitter. Each sample
draws its own decisions and parameters from the given CPU ``torch.Generator``, so a run is reproducible
on any device. Labels get the geometric transforms only; flow targets are computed afterwards from them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .recipe import Augment


def pad_crop(
    image: np.ndarray, labels: np.ndarray, roi: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) image and (H, W) labels -> a random ``roi`` window of both (zero-padded symmetrically
    first where the image is smaller, as MONAI's SpatialPad + RandSpatialCrop)."""
    pads = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for r, s in zip(roi, labels.shape)]
    image = np.pad(image, [(0, 0), *pads])
    labels = np.pad(labels, pads)
    y, x = (int(rng.integers(0, s - r + 1)) for r, s in zip(roi, labels.shape))
    window = (slice(y, y + roi[0]), slice(x, x + roi[1]))
    return image[(slice(None), *window)], labels[window]


def gaussian_kernels(sigma: torch.Tensor, truncated: float = 4.0) -> torch.Tensor:
    """(N,) sigmas -> (N, K) normalised 1-D Gaussian kernels (MONAI's "erf" approximation), K odd and
    wide enough for the largest sigma."""
    tail = int(max(float(sigma.max()) * truncated, 0.5) + 0.5)
    x = torch.arange(-tail, tail + 1, dtype=torch.float32, device=sigma.device)
    t = 0.70710678 / sigma.abs()[:, None]
    kernels = (0.5 * (torch.erf(t * (x + 0.5)) - torch.erf(t * (x - 0.5)))).clamp(min=0)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma_y: torch.Tensor, sigma_x: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, C, H, W) with its own sigmas (B,) along H and W (separable, reflect padding)."""
    b, c, h, w = images.shape
    x = images.reshape(1, b * c, h, w)
    for dim, sigma in ((2, sigma_y), (3, sigma_x)):
        kernels = gaussian_kernels(sigma.to(images.device)).repeat_interleave(c, dim=0)  # (B*C, K)
        k = kernels.shape[1]
        shape = (b * c, 1, k, 1) if dim == 2 else (b * c, 1, 1, k)
        pad = (0, 0, k // 2, k // 2) if dim == 2 else (k // 2, k // 2, 0, 0)
        mode = "reflect" if k // 2 < x.shape[dim] else "replicate"
        x = F.conv2d(F.pad(x, pad, mode=mode), kernels.reshape(shape).to(x.dtype), groups=b * c)
    return x.reshape(b, c, h, w)


class Augmenter:
    """Randomly augments batches: ``augmenter(images, labels)`` with images (B, 3, H, W) float and labels
    (B, H, W) int -> both transformed, same shapes and dtypes. Options: the recipe's ``train.augment``."""

    def __init__(self, options: Augment, generator: torch.Generator) -> None:
        self.options = options
        self.generator = generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def _chosen(self, n: int, prob: float) -> torch.Tensor:
        """Indices of the samples a transform with probability ``prob`` applies to (always draws n numbers)."""
        return torch.nonzero(torch.rand(n, generator=self.generator) < prob).flatten()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        images, labels = images.clone(), labels.clone()
        n = images.shape[0]
        idx = self._chosen(n, o.affine_prob)
        angle = self._uniform(n, -o.rotate_range, o.rotate_range)
        scale = self._uniform(2 * n, *o.scale_range).reshape(n, 2)
        if len(idx):
            images[idx], labels[idx] = self.affine(images[idx], labels[idx], angle[idx], scale[idx])
        for dim in (-2, -1):
            idx = self._chosen(n, o.flip_prob)
            if len(idx):
                images[idx] = images[idx].flip(dim)
                labels[idx] = labels[idx].flip(dim)
        idx = self._chosen(n, o.noise_prob)
        std = self._uniform(n, 0.0, o.noise_std)  # MONAI samples the std in [0, std]
        noise = torch.randn(images.shape, generator=self.generator)
        if len(idx):
            images[idx] += (noise[idx] * std[idx, None, None, None]).to(images)
        idx = self._chosen(n, o.gamma_prob)
        gamma = self._uniform(n, *o.gamma_range)
        if len(idx):
            images[idx] = self.gamma(images[idx], gamma[idx].to(images.device))
        idx = self._chosen(n, o.smooth_prob)
        sigma = self._uniform(2 * n, *o.smooth_sigma).reshape(n, 2)
        if len(idx):
            images[idx] = gaussian_blur(images[idx], sigma[idx, 0], sigma[idx, 1])
        idx = self._chosen(n, o.histogram_shift_prob)
        points = self.control_points(n)
        if len(idx):
            images[idx] = self.histogram_shift(images[idx], points[idx].to(images.device))
        idx = self._chosen(n, o.sharpen_prob)
        sigma1 = self._uniform(2 * n, *o.sharpen_sigma).reshape(n, 2)
        sigma2 = o.sharpen_sigma2 + (sigma1 - o.sharpen_sigma2) * torch.rand(n, 2, generator=self.generator)
        alpha = self._uniform(n, *o.sharpen_alpha)
        if len(idx):
            blurred = gaussian_blur(images[idx], sigma1[idx, 0], sigma1[idx, 1])
            twice = gaussian_blur(blurred, sigma2[idx, 0], sigma2[idx, 1])
            images[idx] = blurred + alpha[idx, None, None, None].to(images) * (blurred - twice)
        idx = self._chosen(n, o.invert_prob)
        if len(idx):
            low = images[idx].amin(dim=(1, 2, 3), keepdim=True)
            high = images[idx].amax(dim=(1, 2, 3), keepdim=True)
            images[idx] = low + high - images[idx]
        idx = self._chosen(n, o.stain_prob)
        c = images.shape[1]
        gain = torch.exp(o.stain_std * torch.randn(n, c, generator=self.generator))
        offset = o.stain_std * (torch.rand(n, c, generator=self.generator) - 0.5)
        colour = (images != images[:, :1]).flatten(1).any(dim=1).cpu()  # grey images stay grey
        idx = idx[colour[idx]]
        if len(idx):
            images[idx] = images[idx] * gain[idx, :, None, None].to(images) + offset[idx, :, None, None].to(images)
        return images, labels

    @staticmethod
    def affine(
        images: torch.Tensor, labels: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate by ``angle`` (B,) and scale by ``scale`` (B, 2) (y, x) about the centre; output pixel p samples
        the input at R·S·p (MONAI's convention), bilinear for images, nearest for labels, border padding."""
        b, _, h, w = images.shape
        cos, sin = torch.cos(angle), torch.sin(angle)
        # pixel-space matrix acting on (x, y): rotation @ diag(sx, sy)
        m = torch.stack([cos * scale[:, 1], -sin * scale[:, 0], sin * scale[:, 1], cos * scale[:, 0]], 1)
        m = m.reshape(b, 2, 2)
        to_norm = torch.tensor([2.0 / w, 2.0 / h])  # normalised coordinates differ from pixels per axis
        theta = torch.zeros(b, 2, 3)
        theta[:, :, :2] = to_norm[None, :, None] * m / to_norm[None, None, :]
        theta = theta.to(images.device)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        images = F.grid_sample(images, grid.to(images.dtype), "bilinear", "border", align_corners=False)
        moved = F.grid_sample(labels[:, None].double(), grid.double(), "nearest", "border", align_corners=False)
        return images, moved[:, 0].round().to(labels.dtype)

    @staticmethod
    def gamma(images: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """MONAI AdjustContrast per image: ((x - min) / range) ** gamma * range + min."""
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = images.amax(dim=(1, 2, 3), keepdim=True) - low
        unit = ((images - low) / (span + 1e-7)).clamp(min=0)
        return unit ** gamma[:, None, None, None] * span + low

    def control_points(self, n: int) -> torch.Tensor:
        """(n, P) floating control points of MONAI's RandHistogramShift: the ends fixed at 0 and 1, each inner
        point uniform between its left neighbour (already moved) and its right neighbour."""
        count = self.options.histogram_shift_points
        points = torch.linspace(0, 1, count).repeat(n, 1)
        for i in range(1, count - 1):
            points[:, i] = points[:, i - 1] + (points[:, i + 1] - points[:, i - 1]) * torch.rand(
                n, generator=self.generator
            )
        return points

    @staticmethod
    def histogram_shift(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Map each image's intensities piecewise-linearly: evenly spaced reference points over [min, max]
        -> ``points`` (B, P) over [min, max]."""
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = images.amax(dim=(1, 2, 3), keepdim=True) - low
        segments = points.shape[1] - 1
        t = ((images - low) / span.clamp(min=1e-12)).clamp(0, 1) * segments
        seg = t.floor().clamp(max=segments - 1)
        frac = t - seg
        flat = seg.long().flatten(1)
        left = points.gather(1, flat).reshape(images.shape)
        right = points.gather(1, flat + 1).reshape(images.shape)
        return (left + (right - left) * frac) * span + low
