"""The generated data sets: determinism, disjoint splits, canonical samples, label consistency."""

import numpy as np
import pytest
import torch

from easerve.model_defs.labels import PRIMITIVE_CLASSES, PRIMITIVE_PARTS, SEGMENTATION_CLASSES, SHAPE_CLASSES
from easerve.training.datasets import open_dataset
from easerve.training.datasets.canonical import detection_collate
from easerve.training.datasets.primitives3d import generate_primitives, primitive_pieces, sample_surface
from easerve.training.datasets.shapes2d import MULTI_SHAPE, SINGLE_SHAPE, render_scenes

GENERATED = [
    ("shapes-2d", "classification"),
    ("shapes-2d", "generation"),
    ("shapes-2d", "detection"),
    ("shapes-2d", "segmentation"),
    ("primitives-3d", "pointcloud-classification"),
    ("primitives-3d", "pointcloud-segmentation"),
]
SMALL = {"size": 48, "num_points": 256}


def _inputs(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@pytest.fixture(scope="module")
def scenes():
    return render_scenes(24, 96, MULTI_SHAPE, seed=3, split="train")


@pytest.fixture(scope="module")
def clouds():
    return generate_primitives(24, 512, seed=3, split="train")


@pytest.mark.parametrize("source,task", GENERATED)
def test_generated_sets_are_deterministic_by_seed(source, task):
    first = open_dataset(source, task, "train", num_samples=6, seed=1, **SMALL)
    again = open_dataset(source, task, "train", num_samples=6, seed=1, **SMALL)
    other = open_dataset(source, task, "train", num_samples=6, seed=2, **SMALL)
    assert torch.equal(_inputs(first), _inputs(again))
    assert not torch.equal(_inputs(first), _inputs(other))


@pytest.mark.parametrize("source,task", GENERATED)
def test_train_and_test_splits_share_no_sample(source, task):
    train = _inputs(open_dataset(source, task, "train", num_samples=12, **SMALL)).flatten(1)
    test = _inputs(open_dataset(source, task, "test", num_samples=12, **SMALL)).flatten(1)
    assert not (train[:, None, :] == test[None, :, :]).all(-1).any()


def test_a_smaller_split_is_a_prefix_of_a_larger_one():
    small = open_dataset("shapes-2d", "detection", "train", num_samples=3, size=64)
    large = open_dataset("shapes-2d", "detection", "train", num_samples=7, size=64)
    for i in range(3):
        assert torch.equal(small[i][0], large[i][0])
        assert torch.equal(small[i][1]["boxes"], large[i][1]["boxes"])


@pytest.mark.parametrize("task,size", [("classification", 64), ("generation", 32), ("segmentation", 128)])
def test_image_samples_are_canonical_at_the_default_size(task, size):
    dataset = open_dataset("shapes-2d", task, "test", num_samples=4)
    image, target = dataset[0]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert target.dtype == torch.int64
    if task == "segmentation":
        assert target.shape == (size, size) and dataset.class_names == list(SEGMENTATION_CLASSES)
        assert 0 <= target.min() and target.max() < len(SEGMENTATION_CLASSES)
    else:
        assert target.shape == () and dataset.class_names == list(SHAPE_CLASSES)


def test_detection_samples_and_collate():
    dataset = open_dataset("shapes-2d", "detection", "test", num_samples=3)
    samples = [dataset[i] for i in range(3)]
    images, targets = detection_collate(samples)
    assert images.shape == (3, 3, 128, 128)
    for (_image, target), collated in zip(samples, targets):
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64
        assert len(target["boxes"]) == len(target["labels"]) >= 1
        assert collated is target
    assert dataset.class_names == list(SHAPE_CLASSES)


@pytest.mark.parametrize(
    "task,target_shape,names",
    [
        ("pointcloud-classification", (), PRIMITIVE_CLASSES),
        ("pointcloud-segmentation", (1024,), PRIMITIVE_PARTS),
    ],
)
def test_point_samples_are_canonical_at_the_default_size(task, target_shape, names):
    dataset = open_dataset("primitives-3d", task, "test", num_samples=2)
    points, target = dataset[0]
    assert points.shape == (1024, 3) and points.dtype == torch.float32
    assert target.shape == target_shape and target.dtype == torch.int64
    assert dataset.class_names == list(names)


def test_single_shape_classes_are_balanced():
    count = 4 * len(SHAPE_CLASSES)
    dataset = open_dataset("shapes-2d", "classification", "train", num_samples=count, size=32)
    labels = [int(dataset[i][1]) for i in range(len(dataset))]
    assert np.bincount(labels).tolist() == [4] * len(SHAPE_CLASSES)


def test_every_box_contains_all_of_its_objects_mask_pixels(scenes):
    for instances, boxes in zip(scenes.instances, scenes.boxes):
        rows, cols = np.indices(instances.shape)
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            mine = instances == index + 1
            assert mine.any(), "every object stays visible"
            assert (cols[mine] >= x0).all() and (cols[mine] + 1 <= x1).all()
            assert (rows[mine] >= y0).all() and (rows[mine] + 1 <= y1).all()


def test_boxes_are_tight_around_unoccluded_shapes():
    single = render_scenes(12, 64, SINGLE_SHAPE, seed=0, split="test")
    for instances, (box,) in zip(single.instances, single.boxes):
        rows, cols = np.nonzero(instances)
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_mask_classes_match_box_classes(scenes):
    for mask, instances, labels in zip(scenes.masks, scenes.instances, scenes.labels):
        for index, label in enumerate(labels):
            assert (mask[instances == index + 1] == label + 1).all()
        assert (mask[instances == 0] == 0).all()
        assert set(np.unique(mask)) == {0, *(labels + 1)}


def test_segmentation_and_detection_show_the_same_scenes():
    segmentation = open_dataset("shapes-2d", "segmentation", "train", num_samples=5, size=96)
    detection = open_dataset("shapes-2d", "detection", "train", num_samples=5, size=96)
    for (image, mask), (same_image, target) in zip(segmentation, detection):
        assert torch.equal(image, same_image)
        inside_a_box_of_its_class = mask == 0
        for (x0, y0, x1, y1), label in zip(target["boxes"].long(), target["labels"]):
            window = inside_a_box_of_its_class[y0:y1, x0:x1]
            window |= mask[y0:y1, x0:x1] == label + 1
        assert inside_a_box_of_its_class.all()


def test_shapes_contrast_with_their_background():
    single = render_scenes(30, 64, SINGLE_SHAPE, seed=5, split="train")
    for image, instances in zip(single.images.astype(float), single.instances):
        shape = image[instances == 1].mean(axis=0)
        background = image[instances == 0].mean(axis=0)
        assert np.linalg.norm(shape - background) > 40


def test_every_point_has_a_part_of_its_own_class(clouds):
    for label, parts in zip(clouds.labels, clouds.parts):
        owner = {PRIMITIVE_PARTS[p].split("/")[0] for p in np.unique(parts)}
        assert owner == {PRIMITIVE_CLASSES[label]}
    for name in PRIMITIVE_PARTS:
        assert PRIMITIVE_PARTS.index(name) in clouds.parts, f"part {name} never generated"


def test_clouds_are_centred_with_unit_radius(clouds):
    np.testing.assert_allclose(clouds.points.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(clouds.points, axis=2).max(axis=1), 1, rtol=1e-5)


def test_clouds_turn_about_the_up_axis_only(clouds):
    """A flat top or bottom stays horizontal: its points share one height (up to jitter)."""
    for points, parts in zip(clouds.points, clouds.parts):
        for name in ("cube/top", "cube/bottom", "cylinder/top", "cone/base", "pyramid/base"):
            on_face = parts == PRIMITIVE_PARTS.index(name)
            if on_face.any():
                assert points[on_face, 2].std() < 0.03


@pytest.mark.parametrize(
    "name,on_part",
    [
        (
            "cube",
            {
                "cube/top": lambda p: np.isclose(p[:, 2], 1),
                "cube/bottom": lambda p: np.isclose(p[:, 2], -1),
                "cube/side": lambda p: np.isclose(np.abs(p[:, :2]).max(axis=1), 1),
            },
        ),
        (
            "cylinder",
            {
                "cylinder/top": lambda p: np.isclose(p[:, 2], 1),
                "cylinder/bottom": lambda p: np.isclose(p[:, 2], -1),
                "cylinder/side": lambda p: np.isclose(np.hypot(p[:, 0], p[:, 1]), 1),
            },
        ),
        (
            "cone",
            {
                "cone/base": lambda p: np.isclose(p[:, 2], -1),
                "cone/side": lambda p: np.isclose(np.hypot(p[:, 0], p[:, 1]), (1 - p[:, 2]) / 2),
            },
        ),
        (
            "torus",
            {
                "torus/outer": lambda p: np.hypot(p[:, 0], p[:, 1]) >= 1,
                "torus/inner": lambda p: np.hypot(p[:, 0], p[:, 1]) <= 1,
            },
        ),
        (
            "pyramid",
            {
                "pyramid/base": lambda p: np.isclose(p[:, 2], -1),
                "pyramid/side": lambda p: np.isclose(np.abs(p[:, :2]).max(axis=1), (1 - p[:, 2]) / 2),
            },
        ),
    ],
)
def test_parts_follow_the_surface_geometry(name, on_part):
    rng = np.random.default_rng(0)
    points, parts = sample_surface(primitive_pieces(name, rng), 2000, rng)
    assert {PRIMITIVE_PARTS[p] for p in np.unique(parts)} == set(on_part)
    for part, holds in on_part.items():
        assert holds(points[parts == PRIMITIVE_PARTS.index(part)]).all(), part
