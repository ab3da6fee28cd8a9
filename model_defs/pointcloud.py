"""PCT-style point cloud models with External Attention or offset self-attention.

The naive PCT of Guo et al. ("PCT: Point Cloud Transformer", 2021): per-point embedding (two 1x1
convs + BN + ReLU) -> `depth` offset-attention layers, each x + LBR(x - attention(x)) -> the
layers' outputs concatenated -> 1x1 conv + BN + LeakyReLU to `global_dim` channels per point ->
max and mean over the points. The attention unit is EA (memories over the points, as in the EA
paper's PCT experiment) or single-head SA (PCT's offset-attention); it is the only difference
between the twins. No sampling or neighbourhoods (FPS, kNN), so the number of points N varies
freely at run time and the graphs export with dynamic batch and point axes.

Heads: `PCTClassifier` maps the pooled feature to class logits; `PCTPartSegmenter` concatenates
each point's feature with the pooled one and predicts part logits per point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from easerve.model_defs.attention import DEFAULT_MEMORY_SIZE, AttentionKind, single_head_attention

# PCT's slope for the LeakyReLUs after the fused features and in the heads.
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class PCTConfig:
    attention: AttentionKind = "ea"
    # Classes for the classifier, part labels for the segmenter.
    num_outputs: int = 40
    embed_dim: int = 128
    depth: int = 4
    memory_size: int = DEFAULT_MEMORY_SIZE
    dropout: float = 0.5
    # PCT uses 1024 fused channels and a 512-256 head; these are CPU-size values.
    global_dim: int = 256
    head_dim: int = 256


class PointwiseConv(nn.Sequential):
    """1x1 Conv1d (no bias) -> BatchNorm1d -> (Leaky)ReLU on point features (B, C, N)."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.0) -> None:
        super().__init__(
            nn.Conv1d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.LeakyReLU(negative_slope),
        )


class OffsetAttentionLayer(nn.Module):
    """PCT's offset-attention on (B, C, N): x + LBR(x - attention(x)), attention over the N points."""

    def __init__(self, dim: int, kind: AttentionKind, memory_size: int) -> None:
        super().__init__()
        self.attention = single_head_attention(kind, dim, memory_size)
        self.transform = PointwiseConv(dim, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        attended = self.attention(features.transpose(1, 2)).transpose(1, 2)
        return features + self.transform(features - attended)


class PCTEncoder(nn.Module):
    """points (B, N, 3) -> per-point features (B, global_dim, N)."""

    def __init__(self, config: PCTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.embed = nn.Sequential(PointwiseConv(3, dim), PointwiseConv(dim, dim))
        self.layers = nn.ModuleList(
            OffsetAttentionLayer(dim, config.attention, config.memory_size) for _ in range(config.depth)
        )
        self.fuse = PointwiseConv(config.depth * dim, config.global_dim, LEAKY_SLOPE)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = self.embed(points.transpose(1, 2))
        layer_outputs = []
        for layer in self.layers:
            features = layer(features)
            layer_outputs.append(features)
        return self.fuse(torch.cat(layer_outputs, dim=1))


def pool_points(features: torch.Tensor) -> torch.Tensor:
    """(B, C, N) per-point features -> (B, 2C, 1): max and mean over the points, concatenated."""
    return torch.cat((features.amax(dim=2), features.mean(dim=2)), dim=1).unsqueeze(2)


def _prediction_head(in_channels: int, config: PCTConfig) -> nn.Sequential:
    """PCT's head on (B, C, N): two LBR + dropout layers (head_dim, head_dim / 2), then logits."""
    hidden = config.head_dim
    return nn.Sequential(
        PointwiseConv(in_channels, hidden, LEAKY_SLOPE),
        nn.Dropout(config.dropout),
        PointwiseConv(hidden, hidden // 2, LEAKY_SLOPE),
        nn.Dropout(config.dropout),
        nn.Conv1d(hidden // 2, config.num_outputs, 1),
    )


class PCTClassifier(nn.Module):
    """Point cloud classifier: points (B, N, 3) float -> logits (B, num_outputs)."""

    def __init__(self, config: PCTConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PCTEncoder(config)
        self.head = _prediction_head(2 * config.global_dim, config)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(pool_points(self.encoder(points)))[:, :, 0]


class PCTPartSegmenter(nn.Module):
    """Part segmenter: points (B, N, 3) float -> per-point part logits (B, N, num_outputs)."""

    def __init__(self, config: PCTConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PCTEncoder(config)
        self.head = _prediction_head(3 * config.global_dim, config)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = self.encoder(points)
        pooled = pool_points(features).expand(-1, -1, features.shape[2])
        return self.head(torch.cat((features, pooled), dim=1)).transpose(1, 2)
