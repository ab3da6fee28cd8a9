"""The attention units against references written out here with explicit exp / sums, and the
paper's cost comparison as `easerve bench attention` counts it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from easerve.bench.attention_cases import count_cost
from easerve.model_defs.attention import (
    AttentionBlock2d,
    ExternalAttention,
    FeatureMapAttention,
    MultiHeadExternalAttention,
    MultiHeadSelfAttention,
    SelfAttention,
)

EPS = 1e-9


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def reference_double_normalize(logits: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(..., N, S) logits: exp / sum over the positions N, then / (eps + sum) over the slots S."""
    exp = torch.exp(logits - logits.amax(dim=-2, keepdim=True))
    over_positions = exp / exp.sum(dim=-2, keepdim=True)
    return over_positions / (eps + over_positions.sum(dim=-1, keepdim=True))


def reference_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with the softmax written out."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    exp = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return exp / exp.sum(dim=-1, keepdim=True) @ value


def tokens(batch: int = 2, positions: int = 12, dim: int = 16) -> torch.Tensor:
    return torch.randn(batch, positions, dim, dtype=torch.float64)


def test_external_attention_matches_explicit_reference():
    attention = ExternalAttention(16, memory_size=8).double()
    x = tokens()
    weights = reference_double_normalize(x @ attention.memory_key.weight.T)
    expected = weights @ attention.memory_value.weight.T
    torch.testing.assert_close(attention(x), expected, rtol=1e-10, atol=1e-12)


def test_external_attention_weights_sum_to_one_over_memory_slots_per_position():
    attention = ExternalAttention(16, memory_size=8).double()
    captured: list[torch.Tensor] = []
    attention.memory_value.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    attention(tokens())
    (weights,) = captured
    assert weights.shape == (2, 12, 8)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 12, dtype=torch.float64))
    assert (weights >= 0).all()


def test_external_attention_softmax_runs_over_positions():
    # A per-slot constant added to every position's logit cancels only in a softmax over the
    # positions; a softmax over the slots (the other axis) would change.
    attention = ExternalAttention(16, memory_size=8).double()
    x = tokens()
    baseline = attention(x)
    per_slot_shift = torch.linspace(-3.0, 5.0, 8, dtype=torch.float64)
    attention.memory_key.register_forward_hook(lambda module, args, output: output + per_slot_shift)
    torch.testing.assert_close(attention(x), baseline)


def test_external_attention_is_not_invariant_to_per_position_logit_shifts():
    # A softmax over the slots followed by the L1 over the slots would cancel this shift.
    attention = ExternalAttention(16, memory_size=8).double()
    x = tokens()
    baseline = attention(x)
    per_position_shift = torch.linspace(-3.0, 5.0, 12, dtype=torch.float64).unsqueeze(-1)
    attention.memory_key.register_forward_hook(lambda module, args, output: output + per_position_shift)
    assert not torch.allclose(attention(x), baseline)


def test_tied_memories_start_transposed_and_train_independently():
    attention = ExternalAttention(16, memory_size=8, tie_memories=True)
    torch.testing.assert_close(attention.memory_value.weight, attention.memory_key.weight.T)
    with torch.no_grad():
        attention.memory_key.weight.add_(1.0)
    assert not torch.allclose(attention.memory_value.weight, attention.memory_key.weight.T)


def test_untied_memories_are_drawn_independently():
    attention = ExternalAttention(16, memory_size=8)
    assert not torch.allclose(attention.memory_value.weight, attention.memory_key.weight.T)


def test_multi_head_external_attention_matches_per_head_loop():
    dim, num_heads, memory, expansion = 12, 3, 5, 4
    attention = MultiHeadExternalAttention(dim, num_heads, memory, expansion).double()
    x = tokens(dim=dim)
    head_dim = dim // num_heads
    expanded = x @ attention.expand.weight.T + attention.expand.bias
    head_outputs = []
    for head in range(num_heads * expansion):
        head_tokens = expanded[..., head * head_dim : (head + 1) * head_dim]
        logits = head_tokens @ attention.memory_key.weight.T + attention.memory_key.bias
        weights = reference_double_normalize(logits)
        head_outputs.append(weights @ attention.memory_value.weight.T + attention.memory_value.bias)
    expected = torch.cat(head_outputs, dim=-1) @ attention.proj.weight.T + attention.proj.bias
    torch.testing.assert_close(attention(x), expected, rtol=1e-10, atol=1e-12)


def test_multi_head_external_attention_shares_one_memory_pair_across_heads():
    dim, num_heads, memory = 12, 3, 5
    attention = MultiHeadExternalAttention(dim, num_heads, memory)
    head_dim = dim // num_heads
    assert attention.memory_key.weight.shape == (memory, head_dim)
    assert attention.memory_value.weight.shape == (head_dim, memory)
    memory_params = {name for name, _ in attention.named_parameters() if "memory" in name}
    assert memory_params == {"memory_key.weight", "memory_key.bias", "memory_value.weight", "memory_value.bias"}


def test_multi_head_external_attention_heads_are_interchangeable():
    # With one memory pair, permuting which channels feed which head (and the projection's
    # columns to match) leaves the output unchanged; per-head memories would not allow this.
    dim, num_heads, expansion = 12, 3, 4
    attention = MultiHeadExternalAttention(dim, num_heads, 5, expansion).double()
    x = tokens(dim=dim)
    baseline = attention(x)
    heads, head_dim = num_heads * expansion, dim // num_heads
    channel_order = torch.arange(dim * expansion).reshape(heads, head_dim)[torch.randperm(heads)].flatten()
    with torch.no_grad():
        attention.expand.weight.copy_(attention.expand.weight[channel_order])
        attention.expand.bias.copy_(attention.expand.bias[channel_order])
        attention.proj.weight.copy_(attention.proj.weight[:, channel_order])
    torch.testing.assert_close(attention(x), baseline)


def test_self_attention_matches_explicit_softmax_reference():
    attention = SelfAttention(16).double()
    x = tokens()
    query = x @ attention.query.weight.T
    key = x @ attention.key.weight.T
    value = x @ attention.value.weight.T
    expected = reference_attention(query, key, value) @ attention.out.weight.T
    torch.testing.assert_close(attention(x), expected, rtol=1e-10, atol=1e-12)


def test_explicit_softmax_reference_agrees_with_scaled_dot_product_attention():
    query, key, value = tokens(), tokens(), tokens()
    torch.testing.assert_close(
        reference_attention(query, key, value),
        F.scaled_dot_product_attention(query, key, value),
    )


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_multi_head_self_attention_matches_torch_multihead_attention(qkv_bias: bool):
    dim, num_heads = 16, 4
    attention = MultiHeadSelfAttention(dim, num_heads, qkv_bias=qkv_bias).double()
    reference = nn.MultiheadAttention(dim, num_heads, batch_first=True).double()
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias if qkv_bias else torch.zeros(3 * dim, dtype=torch.float64))
        reference.out_proj.weight.copy_(attention.proj.weight)
        reference.out_proj.bias.copy_(attention.proj.bias)
    x = tokens(dim=dim)
    expected, _ = reference(x, x, x, need_weights=False)
    torch.testing.assert_close(attention(x), expected, rtol=1e-10, atol=1e-12)


def test_feature_map_attention_treats_each_pixel_as_a_token():
    # A token-wise linear layer over H * W tokens is a 1x1 convolution on the map.
    linear = nn.Linear(6, 6).double()
    conv = nn.Conv2d(6, 6, 1).double()
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)
    feature_map = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(FeatureMapAttention(linear)(feature_map), conv(feature_map))


@pytest.mark.parametrize("kind", ["ea", "sa"])
def test_attention_block_adds_its_input_then_applies_relu(kind: str):
    block = AttentionBlock2d(8, kind, memory_size=4).eval()
    with torch.no_grad():
        block.conv_out[0].weight.zero_()  # attention branch contributes BatchNorm's bias = 0
    feature_map = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(feature_map), F.relu(feature_map))


# The paper's cost comparison setting (Guo et al. 2021): 1 x 512 x 128 x 128, S = 64.
D, SIDE, S = 512, 128, 64
N = SIDE * SIDE


@pytest.mark.parametrize(
    ("module", "params", "macs", "paper_macs"),
    [
        ("sa", 4 * D * D, 4 * N * D * D + 2 * N * N * D, 292.06e9),
        ("ea", 2 * D * S, 2 * N * D * S, 1.07e9),
        # 1x1 convs (c x c, one with bias) + BatchNorm (scale, shift) + the EA memories.
        ("ea-block", 2 * D * D + D + 2 * D + 2 * D * S, 2 * N * D * D + 2 * N * D * S, 9.66e9),
    ],
)
def test_cost_at_paper_setting_matches_formula_and_paper(module: str, params: int, macs: int, paper_macs: float):
    cost = count_cost(module, D, SIDE, S)
    assert cost.params == params
    assert cost.macs == pytest.approx(macs, rel=0.01)
    assert cost.macs == pytest.approx(paper_macs, rel=0.01)
