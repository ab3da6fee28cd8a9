"""Attention units, written once: External Attention and its self-attention baselines.

Every unit maps tokens (B, N, C) to tokens (B, N, C). Feature maps (B, C, H, W) go through
`FeatureMapAttention`, so the task models never reshape by hand.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionKind = Literal["ea", "sa"]
ATTENTION_KINDS: tuple[AttentionKind, ...] = ("ea", "sa")

DEFAULT_MEMORY_SIZE = 64
DEFAULT_EPS = 1e-9


def double_normalize(logits: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The EA double normalisation of (..., N, S) logits.

    Softmax over the positions axis (-2), so each memory slot's weights over the positions sum
    to 1; then an L1 normalisation over the memory axis (-1), so each position's weights over the
    S slots sum to 1 (up to eps).
    """
    attn = logits.softmax(dim=-2)
    return attn / (eps + attn.sum(dim=-1, keepdim=True))


class ExternalAttention(nn.Module):
    """Single-head External Attention: A = Norm(F M_k^T), F_out = A M_v.

    M_k and M_v are bias-free linear layers with `memory_size` (S) rows. With `tie_memories`
    M_v starts as M_k^T, as in the official segmentation code; they are trained independently.
    """

    def __init__(
        self,
        dim: int,
        memory_size: int = DEFAULT_MEMORY_SIZE,
        eps: float = DEFAULT_EPS,
        tie_memories: bool = False,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.memory_key = nn.Linear(dim, memory_size, bias=False)
        self.memory_value = nn.Linear(memory_size, dim, bias=False)
        if tie_memories:
            with torch.no_grad():
                self.memory_value.weight.copy_(self.memory_key.weight.t())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attn = double_normalize(self.memory_key(tokens), self.eps)
        return self.memory_value(attn)


class MultiHeadExternalAttention(nn.Module):
    """Multi-head EA of the official EAMLP code.

    The channels are expanded `expansion`-fold and split into `num_heads * expansion` heads of
    size dim / num_heads; one memory pair (with bias) is shared by every head.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        memory_size: int = DEFAULT_MEMORY_SIZE,
        expansion: int = 4,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.eps = eps
        self.heads = num_heads * expansion
        head_dim = dim // num_heads
        self.expand = nn.Linear(dim, dim * expansion)
        self.memory_key = nn.Linear(head_dim, memory_size)
        self.memory_value = nn.Linear(memory_size, head_dim)
        self.proj = nn.Linear(dim * expansion, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, positions, _ = tokens.shape
        heads = self.expand(tokens).reshape(batch, positions, self.heads, -1).transpose(1, 2)
        attn = double_normalize(self.memory_key(heads), self.eps)
        out = self.memory_value(attn).transpose(1, 2).reshape(batch, positions, -1)
        return self.proj(out)


class SelfAttention(nn.Module):
    """Single-head (non-local style) self-attention with bias-free Q, K, V, O projections (d x d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # A singleton head axis: the ONNX exporter only lowers 4-D scaled_dot_product_attention.
        query, key, value = (p(tokens).unsqueeze(1) for p in (self.query, self.key, self.value))
        return self.out(F.scaled_dot_product_attention(query, key, value).squeeze(1))


class MultiHeadSelfAttention(nn.Module):
    """Standard multi-head self-attention (ViT / T2T-ViT style: fused qkv, output projection)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, positions, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, positions, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, positions, dim))


def single_head_attention(kind: AttentionKind, dim: int, memory_size: int = DEFAULT_MEMORY_SIZE) -> nn.Module:
    """EA or single-head SA of the same width: the one switch behind every EA/SA twin."""
    if kind == "ea":
        return ExternalAttention(dim, memory_size, tie_memories=True)
    if kind == "sa":
        return SelfAttention(dim)
    raise ValueError(f"unknown attention kind {kind!r}; expected one of {ATTENTION_KINDS}")


def multi_head_attention(
    kind: AttentionKind, dim: int, num_heads: int, memory_size: int = DEFAULT_MEMORY_SIZE
) -> nn.Module:
    """Multi-head EA (shared memories) or multi-head SA of the same width."""
    if kind == "ea":
        return MultiHeadExternalAttention(dim, num_heads, memory_size)
    if kind == "sa":
        return MultiHeadSelfAttention(dim, num_heads)
    raise ValueError(f"unknown attention kind {kind!r}; expected one of {ATTENTION_KINDS}")


class FeatureMapAttention(nn.Module):
    """Applies a token attention unit to a feature map (B, C, H, W), positions = H * W."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = feature_map.shape
        tokens = feature_map.flatten(2).transpose(1, 2)
        out = self.attention(tokens)
        return out.transpose(1, 2).reshape(batch, channels, height, width)


class AttentionBlock2d(nn.Module):
    """The official EA segmentation block, with the attention unit as the only switch.

    1x1 conv (bias) -> attention -> 1x1 conv (no bias) + BatchNorm -> + input -> ReLU.
    With kind="sa" this is a non-local block of the same shape.
    """

    def __init__(self, channels: int, kind: AttentionKind, memory_size: int = DEFAULT_MEMORY_SIZE) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.attention = FeatureMapAttention(single_head_attention(kind, channels, memory_size))
        self.conv_out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        out = self.conv_out(self.attention(self.conv_in(feature_map)))
        return F.relu(out + feature_map)
