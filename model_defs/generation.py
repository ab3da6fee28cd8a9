"""A SAGAN-style class-conditional GAN with External Attention or self-attention at mid resolution.

Generator: z -> linear -> 4x4 map -> upsampling residual blocks with class-conditional BatchNorm
(channels halve as the resolution doubles) -> BN -> ReLU -> 3x3 conv -> tanh. Discriminator:
downsampling residual blocks (SNGAN's), ReLU, global sum pooling, then a projection output
(linear score + inner product with a class embedding). Both networks mix the whole map with an
attention block (EA or single-head SA, x + gamma * attention(x), gamma starting at 0) at
`attention_resolution`, and both are spectrally normalised as in SAGAN.

Training contract: the trainer steps `model.discriminator(image, label)` with
`discriminator_hinge_loss` and `model.generator(z, label)` with `generator_hinge_loss`.
`forward(z, label)` runs the generator only: it is the graph that is exported and served.
In eval mode spectral norm uses its stored power-iteration vectors and BatchNorm its running
statistics, so the generator is deterministic and exports as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from model_defs.attention import (
    DEFAULT_MEMORY_SIZE,
    AttentionKind,
    FeatureMapAttention,
    single_head_attention,
)

# The generator starts from a 4x4 map and the discriminator ends on one.
BASE_RESOLUTION = 4
# Widest stage, as a multiple of g_width / d_width.
MAX_WIDTH_MULTIPLIER = 4


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
            f"attention_resolution must be a power of two in [8, {size // 2}], "
            f"got {config.attention_resolution}"
        )


def _apply_spectral_norm(network: nn.Module, layer_types: tuple[type[nn.Module], ...]) -> None:
    """Spectrally normalise the weight of every layer of `layer_types` inside `network`."""
    for layer in list(network.modules()):
        if isinstance(layer, layer_types):
            spectral_norm(layer)


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
    """SNGAN's discriminator residual block: (ReLU)-conv3-ReLU-conv3-(avg-pool), + shortcut.

    The first block sees the image itself, so it has no pre-activation. The shortcut is a 1x1
    conv (then the same pooling) when the block changes the width or the resolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, downsample: bool, preactivation: bool
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1)
            if downsample or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(feature_map) if self.preactivation else feature_map
        hidden = self.conv2(F.relu(self.conv1(hidden)))
        shortcut = self.shortcut(feature_map)
        if self.downsample:
            hidden, shortcut = F.avg_pool2d(hidden, 2), F.avg_pool2d(shortcut, 2)
        return hidden + shortcut


class Generator(nn.Module):
    """(z (B, z_dim) float, label (B,) int64) -> image (B, 3, S, S) in [-1, 1]."""

    def __init__(self, config: SAGANConfig) -> None:
        super().__init__()
        _validate(config)
        self.attention_resolution = config.attention_resolution
        self.resolutions = [
            BASE_RESOLUTION * 2**i
            for i in range((config.image_size // BASE_RESOLUTION).bit_length())
        ]
        widths = [
            _stage_width(config.g_width, config.image_size, r) for r in self.resolutions
        ]
        self.base_width = widths[0]
        self.project = nn.Linear(config.z_dim, widths[0] * BASE_RESOLUTION**2)
        self.blocks = nn.ModuleList(
            UpBlock(c_in, c_out, config.num_classes) for c_in, c_out in zip(widths, widths[1:])
        )
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
        # SAGAN normalises the generator's convs and linears too, but not its class gains.
        _apply_spectral_norm(self, (nn.Conv2d, nn.Linear))

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        feature_map = self.project(z).unflatten(
            1, (self.base_width, BASE_RESOLUTION, BASE_RESOLUTION)
        )
        for resolution, block in zip(self.resolutions[1:], self.blocks):
            feature_map = block(feature_map, label)
            if resolution == self.attention_resolution:
                feature_map = self.attention(feature_map)
        return self.to_image(feature_map)


class Discriminator(nn.Module):
    """(image (B, 3, S, S), label (B,) int64) -> realness scores (B,), unbounded (hinge loss)."""

    def __init__(self, config: SAGANConfig) -> None:
        super().__init__()
        _validate(config)
        layers: list[nn.Module] = []
        in_channels, resolution = 3, config.image_size
        while resolution > BASE_RESOLUTION:
            sees_image = resolution == config.image_size
            resolution //= 2
            out_channels = _stage_width(config.d_width, config.image_size, 2 * resolution)
            layers.append(
                DownBlock(in_channels, out_channels, downsample=True, preactivation=not sees_image)
            )
            if resolution == config.attention_resolution:
                layers.append(GatedAttention(out_channels, config.attention, config.memory_size))
            in_channels = out_channels
        layers.append(DownBlock(in_channels, in_channels, downsample=False, preactivation=True))
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(in_channels, 1)
        # The projection discriminator's class embedding (Miyato & Koyama 2018).
        self.class_embedding = nn.Embedding(config.num_classes, in_channels)
        _apply_spectral_norm(self, (nn.Conv2d, nn.Linear, nn.Embedding))

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.features(image)).sum(dim=(2, 3))
        projection = (self.class_embedding(label) * pooled).sum(dim=1)
        return self.score(pooled)[:, 0] + projection


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


def discriminator_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))).

    Both arguments are raw discriminator scores of shape (B,) (the batches may differ in size);
    the result is a scalar to minimise. Compute `fake_scores` on detached generator output.
    """
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def generator_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: -mean(D(G(z, y), y)), a scalar to minimise.

    `fake_scores` are the discriminator's raw (B,) scores of generated images, with the graph
    through the generator kept so the loss reaches its weights.
    """
    return -fake_scores.mean()
