"""A SAGAN-style class-conditional GAN with External Attention or self-attention at mid resolution.

Generator: (z, class embedding) -> linear -> 4x4 map -> upsampling residual blocks with
class-conditional BatchNorm (channels halve as the resolution doubles) -> BN -> ReLU -> 3x3 conv
-> tanh. Discriminator: downsampling residual blocks with BatchNorm and leaky ReLU, global max
pooling, then K + 1 logits: the K real classes and "fake" (the semi-supervised GAN's
discriminator, Salimans et al. 2016). Both networks mix the whole map with an attention block
(EA or single-head SA, x + gamma * attention(x), gamma starting at 0) at `attention_resolution`.

Why not SAGAN's projection discriminator with hinge loss: on the generated shapes its
sum-pooled, spectrally normalised trunk never learned the classes, so the generator drew one
blob whatever class it was asked for (judged class accuracy at chance after 5000 steps).
A (K + 1)-way discriminator learns the classes from the real images and sees every fake as
"fake", so the generator cannot satisfy it with cues that are not the class's shape (an
auxiliary classifier trained on real images only was fooled that way).

Training contract: the trainer steps `model.discriminator(image)` with `discriminator_loss`
and `model.generator(z, label)` with `generator_loss`. `forward(z, label)` runs the generator
only: it is the graph that is exported and served. In eval mode BatchNorm uses its running
statistics, so the generator is deterministic and exports as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from easerve.model_defs.attention import (
    DEFAULT_MEMORY_SIZE,
    AttentionKind,
    FeatureMapAttention,
    single_head_attention,
)

# The generator starts from a 4x4 map and the discriminator ends on one.
BASE_RESOLUTION = 4
# Widest stage, as a multiple of g_width / d_width.
MAX_WIDTH_MULTIPLIER = 4
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class SAGANConfig:
    attention: AttentionKind = "ea"
    num_classes: int = 6
    z_dim: int = 64
    # A power of two, >= 16.
    image_size: int = 32
    # Channels at full resolution; they double per halving, up to 4x. 16 trains the 32x32
    # shapes in minutes on a CPU; SAGAN's CIFAR-size networks use 64 (generator) and 128.
    g_width: int = 16
    d_width: int = 16
    memory_size: int = DEFAULT_MEMORY_SIZE
    # Where both networks place their attention block; SAGAN puts it at the middle resolution.
    attention_resolution: int = 16


def _stage_width(width: int, image_size: int, resolution: int) -> int:
    return width * min(MAX_WIDTH_MULTIPLIER, image_size // resolution)


def _validate(config: SAGANConfig) -> None:
    size = config.image_size
    if size < 4 * BASE_RESOLUTION or size & (size - 1):
        raise ValueError(f"image_size must be a power of two >= 16, got {size}")
    # The discriminator's feature maps run from image_size / 2 down to the base resolution.
    if not 2 * BASE_RESOLUTION <= config.attention_resolution <= size // 2 or (
        config.attention_resolution & (config.attention_resolution - 1)
    ):
        raise ValueError(
            f"attention_resolution must be a power of two in [8, {size // 2}], got {config.attention_resolution}"
        )


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine parameters, then a per-class gain and bias (SAGAN's generator)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, feature_map: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        gain = self.gain(label)[:, :, None, None]
        bias = self.bias(label)[:, :, None, None]
        return self.norm(feature_map) * gain + bias


class GatedAttention(nn.Module):
    """x + gamma * attention(x) on a feature map, gamma starting at 0.

    As in SAGAN, the networks first rely on local features and learn how much global context
    to mix in.
    """

    def __init__(self, channels: int, kind: AttentionKind, memory_size: int) -> None:
        super().__init__()
        self.attention = FeatureMapAttention(single_head_attention(kind, channels, memory_size))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map + self.gamma * self.attention(feature_map)


class UpBlock(nn.Module):
    """Residual block doubling the resolution: CBN-ReLU-up-conv3-CBN-ReLU-conv3, + up-conv1."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, feature_map: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        hidden = F.interpolate(F.relu(self.norm1(feature_map, label)), scale_factor=2.0)
        hidden = self.conv2(F.relu(self.norm2(self.conv1(hidden), label)))
        return hidden + self.shortcut(F.interpolate(feature_map, scale_factor=2.0))


class DownBlock(nn.Module):
    """Discriminator residual block: conv3-BN-LReLU-conv3-BN, + 1x1-conv shortcut, LReLU, then
    2x2 average pooling when it downsamples."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.norm1(self.conv1(feature_map)), LEAKY_SLOPE)
        hidden = F.leaky_relu(self.norm2(self.conv2(hidden)) + self.shortcut(feature_map), LEAKY_SLOPE)
        return F.avg_pool2d(hidden, 2) if self.downsample else hidden


class Generator(nn.Module):
    """(z (B, z_dim) float, label (B,) int64) -> image (B, 3, S, S) in [-1, 1]."""

    def __init__(self, config: SAGANConfig) -> None:
        super().__init__()
        _validate(config)
        self.attention_resolution = config.attention_resolution
        self.resolutions = [BASE_RESOLUTION * 2**i for i in range((config.image_size // BASE_RESOLUTION).bit_length())]
        widths = [_stage_width(config.g_width, config.image_size, r) for r in self.resolutions]
        self.base_width = widths[0]
        # The class enters twice: as an embedding next to z, so the 4x4 layout can already
        # depend on it, and through every block's conditional BatchNorm.
        self.class_embedding = nn.Embedding(config.num_classes, config.z_dim)
        self.project = nn.Linear(2 * config.z_dim, widths[0] * BASE_RESOLUTION**2)
        self.blocks = nn.ModuleList(UpBlock(c_in, c_out, config.num_classes) for c_in, c_out in zip(widths, widths[1:]))
        self.attention = GatedAttention(
            widths[self.resolutions.index(config.attention_resolution)],
            config.attention,
            config.memory_size,
        )
        self.to_image = nn.Sequential(
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
            nn.Conv2d(widths[-1], 3, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        feature_map = self.project(torch.cat([z, self.class_embedding(label)], dim=1)).unflatten(
            1, (self.base_width, BASE_RESOLUTION, BASE_RESOLUTION)
        )
        for resolution, block in zip(self.resolutions[1:], self.blocks):
            feature_map = block(feature_map, label)
            if resolution == self.attention_resolution:
                feature_map = self.attention(feature_map)
        return self.to_image(feature_map)


class Discriminator(nn.Module):
    """image (B, 3, S, S) -> (B, num_classes + 1) logits: one per real class, the last for "fake".

    Global max pooling, not SNGAN's sum: a shape fills a fraction of the image at any place, and
    summing over every position drowns it in the background (a sum-pooled trunk stayed at chance
    as a shapes classifier, a max-pooled one with BatchNorm learned the classes).
    """

    def __init__(self, config: SAGANConfig) -> None:
        super().__init__()
        _validate(config)
        layers: list[nn.Module] = []
        in_channels, resolution = 3, config.image_size
        while resolution > BASE_RESOLUTION:
            resolution //= 2
            out_channels = _stage_width(config.d_width, config.image_size, 2 * resolution)
            layers.append(DownBlock(in_channels, out_channels, downsample=True))
            if resolution == config.attention_resolution:
                layers.append(GatedAttention(out_channels, config.attention, config.memory_size))
            in_channels = out_channels
        layers.append(DownBlock(in_channels, in_channels, downsample=False))
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(in_channels, config.num_classes + 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(image).amax(dim=(2, 3)))


class ConditionalGAN(nn.Module):
    """Generator and discriminator of one config; `forward` is the generator (what is served)."""

    def __init__(self, config: SAGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) float, label (B,) int64 in [0, num_classes) -> image (B, 3, S, S) in [-1, 1]."""
        return self.generator(z, label)


def discriminator_loss(real_logits: torch.Tensor, real_labels: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the (K + 1)-way discriminator: real images as their class, generated
    ones (computed on detached generator output) as the extra "fake" class K.

    Logits are (B, K + 1) (the two batches may differ in size); the result is a scalar.
    """
    fake_class = torch.full(fake_logits.shape[:1], fake_logits.shape[1] - 1, device=fake_logits.device)
    return F.cross_entropy(real_logits, real_labels) + F.cross_entropy(fake_logits, fake_class)


def generator_loss(fake_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of generated images against the class they were asked for: the generator
    wins when the discriminator takes them for real images of that class.

    `fake_logits` (B, K + 1) keep the graph through the generator, so the loss reaches its weights.
    """
    return F.cross_entropy(fake_logits, labels)
