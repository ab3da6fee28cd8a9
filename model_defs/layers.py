"""Small layers shared by the task models (the attention units live in `attention.py`)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, the transformer feed-forward block."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU, padding keeps the size at stride 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


def sinusoid_position_table(positions: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of the Transformer paper, shape (1, positions, dim)."""
    position = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
    exponent = torch.arange(dim, dtype=torch.float64) // 2 * 2 / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


def init_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """ViT-style init: truncated-normal linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_kaiming_conv(module: nn.Module) -> None:
    """He init for convolutions (the official EA code's N(0, sqrt(2/n)))."""
    if isinstance(module, nn.Conv2d | nn.Conv1d):
        fan_out = module.out_channels * math.prod(module.kernel_size)
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
