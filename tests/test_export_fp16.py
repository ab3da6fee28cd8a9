"""FP16 export keeps the EA double normalisation (softmax, then L1 with a 1e-9 epsilon) in FP32.

onnxruntime's CPU provider runs most FP16 nodes through FP32 kernels, which would hide the
problem; `onnx.reference.ReferenceEvaluator` computes every node in its declared dtype, as a GPU
does, so the naive conversion shows the failure it has on a GPU.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from easerve.export.fp16 import convert_to_fp16
from easerve.export.onnx_graph import GraphSignature, export_onnx
from easerve.export.ort_model import OrtModel
from easerve.model_defs.attention import ExternalAttention, FeatureMapAttention

CHANNELS, SIDE = 16, 128  # 128 x 128 = 16384 positions, the paper's feature map


def peaky_feature_map(seed: int = 0) -> torch.Tensor:
    """Low-level noise plus two strong opposite activations: for every memory slot one of them
    dominates the softmax over positions, so every other position's weights are ~1e-9, below
    FP16's smallest subnormal (6e-8), while FP32 still resolves them."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(1, CHANNELS, SIDE, SIDE, generator=generator) * 0.1
    direction = torch.randn(CHANNELS, generator=generator)
    direction = direction / direction.norm()
    features[0, :, 10, 10] = 200 * direction
    features[0, :, 100, 100] = -200 * direction
    return features


@pytest.fixture(scope="module")
def attention_graphs(tmp_path_factory) -> tuple[torch.nn.Module, dict[str, Path]]:
    """The EA unit over a feature map, exported in FP32, and its FP16 conversions with and
    without the FP32 island."""
    torch.manual_seed(0)
    module = FeatureMapAttention(ExternalAttention(CHANNELS, tie_memories=True)).eval()
    folder = tmp_path_factory.mktemp("fp16")
    paths = {"fp32": folder / "fp32.onnx", "island": folder / "island.onnx", "naive": folder / "naive.onnx"}
    signature = GraphSignature(("features",), ("out",), {"features": {0: "batch"}, "out": {0: "batch"}})
    export_onnx(module, (torch.randn(2, CHANNELS, SIDE, SIDE),), signature, paths["fp32"])
    convert_to_fp16(paths["fp32"], paths["island"])
    convert_to_fp16(paths["fp32"], paths["naive"], keep_normalisation_fp32=False)
    return module, paths


def _fp16_faithful(path: Path, features: torch.Tensor) -> np.ndarray:
    return ReferenceEvaluator(str(path)).run(None, {"features": features.numpy()})[0]


def test_fp16_island_gives_no_nan_on_a_peaky_16k_position_map_where_naive_fp16_breaks(attention_graphs):
    module, paths = attention_graphs
    features = peaky_feature_map()
    with torch.no_grad():
        reference = module(features).numpy()
    scale = np.abs(reference).max()

    island = _fp16_faithful(paths["island"], features)
    assert np.isfinite(island).all()
    island_error = np.abs(island - reference).max() / scale
    assert island_error < 5e-3

    naive = _fp16_faithful(paths["naive"], features)
    naive_broken = ~np.isfinite(naive).all() or np.abs(naive - reference).max() / scale > 0.05
    assert naive_broken, "the naive FP16 graph should fail on this input"


def test_fp16_island_also_holds_in_onnxruntime(attention_graphs):
    module, paths = attention_graphs
    features = peaky_feature_map(seed=1)
    with torch.no_grad():
        reference = module(features).numpy()
    out = OrtModel(paths["island"], threads=1)(features).numpy()
    assert np.isfinite(out).all() and np.abs(out - reference).max() / np.abs(reference).max() < 5e-3


def test_fp32_export_keeps_the_ea_epsilon(attention_graphs):
    """Rows whose softmax weights all underflow even in FP32 give 0, not 0/0: the exporter's
    own optimiser would drop the `+ 1e-9` (it matches `x + 0` with tolerance 1e-8)."""
    module, paths = attention_graphs
    features = peaky_feature_map() * 100  # gaps of ~1e3 in the logits: exp underflows in FP32
    with torch.no_grad():
        reference = module(features).numpy()
    out = OrtModel(paths["fp32"], threads=1)(features).numpy()
    assert np.isfinite(reference).all() and np.isfinite(out).all()
    assert np.abs(out - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())
