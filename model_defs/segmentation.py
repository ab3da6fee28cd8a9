"""EANet semantic segmentation: a dilated conv backbone at output stride 8 and the EA head.

Head, as in the official code: 3x3 ConvBNReLU -> attention block (EA, or a non-local
self-attention block of the same shape) -> 3x3 ConvBNReLU -> Dropout2d -> 1x1 classifier ->
bilinear upsample to the input size. Two backbones: a small dilated conv stack for CPU training,
and the paper's dilated ResNet-101 (layers 3 and 4 dilated instead of strided).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from easerve.model_defs.attention import DEFAULT_MEMORY_SIZE, AttentionBlock2d, AttentionKind
from easerve.model_defs.layers import ConvBNReLU, init_kaiming_conv

OUTPUT_STRIDE = 8
RESNET101_BLOCKS = (3, 4, 23, 3)
CLASSIFIER_INIT_STD = 0.01


@dataclass(frozen=True)
class EANetConfig:
    attention: AttentionKind = "ea"
    num_classes: int = 21
    backbone: Literal["tiny", "resnet101"] = "tiny"
    # Base width of the tiny backbone (ignored by resnet101).
    backbone_width: int = 32
    # Backbone output channels: 2048 for resnet101.
    head_in: int = 128
    # The paper uses 512 and 256.
    head_dim: int = 128
    mid_dim: int = 64
    memory_size: int = DEFAULT_MEMORY_SIZE
    dropout: float = 0.1


class TinyDilatedBackbone(nn.Sequential):
    """(B, 3, H, W) -> (B, out_channels, H/8, W/8): three strided convs, then dilated ones.

    Past stride 8 the receptive field grows by dilation (2, then 4) instead of downsampling,
    the same recipe as the dilated ResNet, at a size that trains on a CPU.
    """

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__(
            ConvBNReLU(3, width, stride=2),
            ConvBNReLU(width, 2 * width, stride=2),
            ConvBNReLU(2 * width, 2 * width),
            ConvBNReLU(2 * width, 4 * width, stride=2),
            ConvBNReLU(4 * width, 4 * width, dilation=2),
            ConvBNReLU(4 * width, out_channels, dilation=4),
        )


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), with a dilation for the dilated stages."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


def _resnet_stage(in_ch: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    layers = [Bottleneck(in_ch, planes, stride, dilation)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DilatedResNet(nn.Module):
    """Dilated ResNet (default: ResNet-101), (B, 3, H, W) -> (B, 2048, H/8, W/8).

    Layers 3 and 4 keep stride 1 and use dilation 2 and 4, so the output stride is 8.
    """

    def __init__(self, blocks: tuple[int, int, int, int] = RESNET101_BLOCKS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.layer1 = _resnet_stage(64, 64, blocks[0], stride=1, dilation=1)
        self.layer2 = _resnet_stage(256, 128, blocks[1], stride=2, dilation=1)
        self.layer3 = _resnet_stage(512, 256, blocks[2], stride=1, dilation=2)
        self.layer4 = _resnet_stage(1024, 512, blocks[3], stride=1, dilation=4)
        self.out_channels = 512 * Bottleneck.expansion

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.stem(image)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            features = layer(features)
        return features


def build_backbone(config: EANetConfig) -> nn.Module:
    """The backbone named by `config.backbone`, producing `config.head_in` channels at stride 8."""
    if config.backbone == "tiny":
        return TinyDilatedBackbone(config.backbone_width, config.head_in)
    if config.backbone == "resnet101":
        backbone = DilatedResNet()
        if backbone.out_channels != config.head_in:
            raise ValueError(f"resnet101 gives {backbone.out_channels} channels, head_in is {config.head_in}")
        return backbone
    raise ValueError(f"unknown backbone {config.backbone!r}; expected 'tiny' or 'resnet101'")


class EANet(nn.Module):
    """Segmenter: (B, 3, H, W) normalised image, H and W multiples of 8 -> (B, C, H, W) logits.

    `stride` is the stride of `forward_head`'s logits; `input_multiple` what H and W must be
    multiples of.
    """

    def __init__(self, config: EANetConfig) -> None:
        super().__init__()
        self.config = config
        self.stride = OUTPUT_STRIDE
        self.input_multiple = OUTPUT_STRIDE
        self.backbone = build_backbone(config)
        self.reduce = ConvBNReLU(config.head_in, config.head_dim)
        self.attention = AttentionBlock2d(config.head_dim, config.attention, config.memory_size)
        self.fuse = ConvBNReLU(config.head_dim, config.mid_dim)
        self.dropout = nn.Dropout2d(config.dropout)
        self.classifier = nn.Conv2d(config.mid_dim, config.num_classes, 1)
        self.apply(init_kaiming_conv)
        # He init on a 1x1 conv with few outputs gives logits of several units; start near uniform.
        nn.init.normal_(self.classifier.weight, std=CLASSIFIER_INIT_STD)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """Backbone features, (B, head_in, H/8, W/8)."""
        return self.backbone(image)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits at the feature resolution, (B, num_classes, H/8, W/8)."""
        head = self.fuse(self.attention(self.reduce(features)))
        return self.classifier(self.dropout(head))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.forward_head(self.forward_features(image))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
