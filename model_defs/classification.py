"""EAMLP (T2T-ViT with External Attention) and the same network with multi-head self-attention.

Tokens-to-token stem: three soft splits (7x7/s4, 3x3/s2, 3x3/s2) with a single-head attention
token block after the first two; then `depth` transformer blocks whose attention is multi-head EA
(shared memories, 4x expansion) or multi-head SA; class token + fixed sinusoid positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from easerve.model_defs.attention import AttentionKind, multi_head_attention, single_head_attention
from easerve.model_defs.layers import Mlp, init_trunc_normal, sinusoid_position_table

# The official T2T token blocks use 128 memory slots; the backbone blocks use 64.
TOKEN_MEMORY_SIZE = 128
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)


@dataclass(frozen=True)
class EAMLPConfig:
    attention: AttentionKind = "ea"
    image_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 256
    depth: int = 7
    num_heads: int = 4
    mlp_ratio: float = 2.0
    token_dim: int = 64
    # "token": the paper's class token. "max": a global max over the tokens instead. On small data
    # sets EA's class token barely sees the image (its only link to the other tokens is the
    # softmax denominator over positions) and trains far slower; max pooling learned fastest here.
    pool: Literal["token", "max"] = "token"


class SoftSplit(nn.Module):
    """nn.Unfold as a convolution with a fixed one-hot kernel, so it exports to any runtime.

    Output channels are ordered (channel, kernel row, kernel column) exactly like nn.Unfold;
    the spatial grid is kept so the caller never needs a square-root of the token count.
    """

    def __init__(self, channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        eye = torch.eye(channels * kernel * kernel)
        self.register_buffer(
            "kernel",
            eye.reshape(channels * kernel * kernel, channels, kernel, kernel),
            persistent=False,
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return F.conv2d(feature_map, self.kernel, stride=self.stride, padding=self.padding)


class TokenBlock(nn.Module):
    """Tokens-to-token block: project to `out_dim`, attention with a residual, then an MLP."""

    def __init__(self, in_dim: int, out_dim: int, kind: AttentionKind) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        self.project = nn.Linear(in_dim, out_dim)
        self.attention = single_head_attention(kind, out_dim, TOKEN_MEMORY_SIZE)
        self.proj = nn.Linear(out_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.project(self.norm1(tokens))
        tokens = tokens + self.proj(self.attention(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, kind: AttentionKind) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = multi_head_attention(kind, dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class TokensToToken(nn.Module):
    """The T2T stem: image (B, 3, H, W) -> tokens (B, H/16 * W/16, embed_dim)."""

    def __init__(self, config: EAMLPConfig) -> None:
        super().__init__()
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = SOFT_SPLITS
        token_dim = config.token_dim
        self.split0 = SoftSplit(config.in_chans, k0, s0, p0)
        self.block0 = TokenBlock(config.in_chans * k0 * k0, token_dim, config.attention)
        self.split1 = SoftSplit(token_dim, k1, s1, p1)
        self.block1 = TokenBlock(token_dim * k1 * k1, token_dim, config.attention)
        self.split2 = SoftSplit(token_dim, k2, s2, p2)
        self.project = nn.Linear(token_dim * k2 * k2, config.embed_dim)

    @staticmethod
    def _tokens_to_map(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = like.shape
        return tokens.transpose(1, 2).reshape(batch, -1, height, width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        grid = self.split0(image)
        tokens = self.block0(grid.flatten(2).transpose(1, 2))
        grid = self.split1(self._tokens_to_map(tokens, grid))
        tokens = self.block1(grid.flatten(2).transpose(1, 2))
        grid = self.split2(self._tokens_to_map(tokens, grid))
        return self.project(grid.flatten(2).transpose(1, 2))


class EAMLP(nn.Module):
    """Image classifier: (B, 3, S, S) normalised image -> (B, num_classes) logits."""

    def __init__(self, config: EAMLPConfig) -> None:
        super().__init__()
        self.config = config
        if config.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {config.image_size}")
        num_tokens = (config.image_size // 16) ** 2
        self.tokens_to_token = TokensToToken(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if config.pool == "token" else None
        num_positions = num_tokens + (self.cls_token is not None)
        self.register_buffer("pos_embed", sinusoid_position_table(num_positions, config.embed_dim))
        self.blocks = nn.Sequential(
            *[
                TransformerBlock(config.embed_dim, config.num_heads, config.mlp_ratio, config.attention)
                for _ in range(config.depth)
            ]
        )
        self.norm = nn.LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_trunc_normal)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens_to_token(image)
        if self.cls_token is None:
            return self.norm(self.blocks(tokens + self.pos_embed)).amax(dim=1)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image))
