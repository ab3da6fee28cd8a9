"""The PyTorch reference runner rebuilds the registered model from a checkpoint and matches it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from easerve.artifacts.manifest import FileInfo, Manifest, Preprocessing, TensorInfo, describe_file
from easerve.service.model_files import ModelFiles
from easerve.service.runners.selection import create_runner

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
registry = pytest.importorskip("easerve.model_defs.registry")

MODEL = "eamlp-ea-tiny"


def test_torch_runner_matches_the_module_it_was_saved_from(tmp_path):
    entry = registry.get_model_entry(MODEL)
    torch.manual_seed(0)
    module = entry.create().eval()
    safetensors_torch.save_model(module, str(tmp_path / "model.safetensors"))
    checkpoint = pytest.importorskip("easerve.training.checkpoint")
    info = checkpoint.CheckpointInfo(
        model=MODEL,
        task="classification",
        attention="ea",
        config=dataclasses.asdict(entry.config),
        class_names=list("abcdef"),
        preprocessing={"kind": "image", "image_size": [64, 64]},
        metrics={},
        dataset="none",
        seed=0,
        steps=0,
        batch_size=1,
        learning_rate=0.0,
        training_seconds=0.0,
        code_version="test",
        torch_version=torch.__version__,
    )
    checkpoint.save_info(tmp_path, info)
    manifest = Manifest(
        name=MODEL,
        task="classification",
        attention="ea",
        arch="eamlp",
        inputs=[TensorInfo(name="image", dtype="float32", shape=["batch", 3, 64, 64])],
        outputs=[TensorInfo(name="logits", dtype="float32", shape=["batch", 6])],
        preprocessing=Preprocessing(kind="image", image_size=(64, 64), mean=(0, 0, 0), std=(1, 1, 1)),
        labels=list("abcdef"),
        max_batch_size=4,
        onnx=FileInfo(path="model.onnx", sha256="unused", bytes=0),
        opset=17,
        source_checkpoint=describe_file(tmp_path, "model.safetensors"),
    )
    runner = create_runner(ModelFiles(tmp_path, manifest), settings=None, backend="torch", max_batch_size=4)
    images = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    outputs = runner.run({"image": images})
    with torch.inference_mode():
        expected = module(torch.from_numpy(images)).numpy()
    assert runner.backend == "torch-cpu"
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    runner.close()
