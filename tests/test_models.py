"""Every bundled registry model, checked the same way: declared outputs, the EA/SA twin's
interface, one training step, and ONNX Runtime parity of a dynamic-batch export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from easerve.artifacts.tasks import TaskName
from easerve.export.onnx_graph import export_onnx, signature_of
from easerve.model_defs.detection import centernet_loss, centernet_targets
from easerve.model_defs.instances import instance_targets, mask_loss
from easerve.model_defs.registry import ModelEntry, list_models, twin_of

BUNDLED = list_models(bundled=True)
BUNDLED_EA = list_models(bundled=True, attention="ea")
EXPORT_BATCH, PARITY_BATCHES = 2, (1, 3)
MAX_ABS_ERROR = 1e-4
STEP_LENGTH = 1e-3  # distance moved in parameter space by the optimisation step


def _ids(entries: list[ModelEntry]) -> list[str]:
    return [e.name for e in entries]


def _as_tuple(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _fresh_model(entry: ModelEntry) -> nn.Module:
    torch.manual_seed(0)
    return entry.create()


# --- losses for the training step: fixed targets drawn from a seeded generator ---------------


def _labels(high: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(1))


def _class_loss(class_axis: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]:
    """Cross-entropy of the logits against fixed random labels; classes along `class_axis`."""

    def loss(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits = model(*inputs).movedim(class_axis, 1)
        target_shape = logits.shape[:1] + logits.shape[2:]
        return F.cross_entropy(logits, _labels(logits.shape[1], target_shape))

    return loss


def _detection_loss(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The detector's own CenterNet loss on its raw maps; one box of class 1 per image."""
    (image,) = inputs
    raw = model.forward_raw(image)
    num_classes, height, width = raw["heatmap"].shape[1:]
    box, label = torch.tensor([[16.0, 24.0, 64.0, 80.0]]), torch.tensor([1])
    per_image = centernet_targets(box, label, (height, width), num_classes, model.stride)
    batched = {k: v.unsqueeze(0).expand(image.shape[0], *v.shape) for k, v in per_image.items()}
    return centernet_loss(raw, batched)["loss"]


def _instance_loss(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The detector's loss plus the mask loss; one square instance of class 1 per image."""
    (image,) = inputs
    raw = model.forward_raw(image)
    mask = torch.zeros(1, *image.shape[-2:], dtype=torch.uint8)
    mask[0, 24:80, 16:64] = 1
    target = {"boxes": torch.tensor([[16.0, 24.0, 64.0, 80.0]]), "labels": torch.tensor([1]), "masks": mask}
    objects = instance_targets([target] * image.shape[0], tuple(raw["heatmap"].shape[-2:]))
    return _detection_loss(model, inputs) + mask_loss(raw, objects)


def _generation_loss(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean squared distance of the generated images to a fixed image in [-1, 1]."""
    images = model(*inputs)
    target = torch.rand(images.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return F.mse_loss(images, target)


TASK_LOSSES: dict[TaskName, Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]] = {
    "classification": _class_loss(-1),
    "segmentation": _class_loss(1),
    "detection": _detection_loss,
    "generation": _generation_loss,
    "pointcloud-classification": _class_loss(-1),
    "pointcloud-segmentation": _class_loss(-1),
    "instance-segmentation": _instance_loss,
}


# --- ONNX export (export/onnx_graph.py, the exporter the product uses) -------------------------


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[ModelEntry], tuple[nn.Module, Path]]:
    """(model, ONNX path) per entry, exported once per test module (a failure is kept too)."""
    cache: dict[str, tuple[nn.Module, Path] | Exception] = {}

    def get(entry: ModelEntry) -> tuple[nn.Module, Path]:
        if entry.name not in cache:
            model = _fresh_model(entry).eval()
            path = tmp_path_factory.mktemp("onnx") / f"{entry.name}.onnx"
            try:
                export_onnx(model, entry.example_inputs(EXPORT_BATCH), signature_of(entry), path)
                cache[entry.name] = (model, path)
            except Exception as error:  # noqa: BLE001 - re-raised for every batch size
                cache[entry.name] = error
        result = cache[entry.name]
        if isinstance(result, Exception):
            raise result
        return result

    return get


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", BUNDLED, ids=_ids(BUNDLED))
def test_forward_gives_declared_output_shapes_dtypes_and_finite_values(entry: ModelEntry):
    model = _fresh_model(entry).eval()
    with torch.no_grad():
        outputs = _as_tuple(model(*entry.example_inputs(2)))
    assert len(outputs) == len(entry.outputs)
    for spec, output in zip(entry.outputs, outputs):
        assert tuple(output.shape) == entry.concrete_shape(spec, 2), spec.name
        assert output.dtype == getattr(torch, spec.dtype), spec.name
        assert torch.isfinite(output.float()).all(), spec.name


@pytest.mark.parametrize("entry", BUNDLED_EA, ids=_ids(BUNDLED_EA))
def test_ea_and_sa_twins_share_inputs_and_outputs(entry: ModelEntry):
    twin = twin_of(entry.name)
    assert (twin.task, twin.inputs, twin.outputs) == (entry.task, entry.inputs, entry.outputs)
    inputs = entry.example_inputs(2)
    with torch.no_grad():
        ea_outputs = _as_tuple(_fresh_model(entry).eval()(*inputs))
        sa_outputs = _as_tuple(_fresh_model(twin).eval()(*inputs))
    assert [(o.shape, o.dtype) for o in ea_outputs] == [(o.shape, o.dtype) for o in sa_outputs]


@pytest.mark.parametrize("entry", BUNDLED, ids=_ids(BUNDLED))
def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch(entry: ModelEntry):
    model = _fresh_model(entry).train()
    inputs = entry.example_inputs(2)
    loss_fn = TASK_LOSSES[entry.task]

    def loss() -> torch.Tensor:
        torch.manual_seed(2)  # the same dropout masks before and after the step
        return loss_fn(model, inputs)

    before = loss()
    before.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    # A gradient step of fixed length: small enough for the first-order decrease to dominate
    # in every model, whatever its gradient scale.
    learning_rate = STEP_LENGTH / torch.nn.utils.get_total_norm(gradients).item()
    torch.optim.SGD(model.parameters(), lr=learning_rate).step()
    with torch.no_grad():
        after = loss()
    assert torch.isfinite(before)
    assert after.item() < before.item()


@pytest.mark.parametrize("entry", BUNDLED, ids=_ids(BUNDLED))
@pytest.mark.parametrize("batch", PARITY_BATCHES)
def test_onnx_runtime_reproduces_pytorch(
    entry: ModelEntry, batch: int, exported: Callable[[ModelEntry], tuple[nn.Module, Path]]
):
    model, path = exported(entry)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = entry.example_inputs(batch, seed=batch)
    with torch.no_grad():
        expected = _as_tuple(model(*inputs))
    feeds = {spec.name: tensor.numpy() for spec, tensor in zip(entry.inputs, inputs)}
    actual = session.run([spec.name for spec in entry.outputs], feeds)
    for spec, want, got in zip(entry.outputs, expected, actual):
        assert got.shape == tuple(want.shape), spec.name
        if want.is_floating_point():
            assert np.abs(got - want.numpy()).max() <= MAX_ABS_ERROR, spec.name
        else:
            np.testing.assert_array_equal(got, want.numpy(), err_msg=spec.name)
