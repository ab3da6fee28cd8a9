"""Loaders of the formats users bring, on tiny files written here, and their errors."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from easerve.training.datasets import DatasetError, open_dataset
from easerve.training.datasets.shapenet_part import CATEGORY_NAMES, FIRST_PART, PART_NAMES

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def _save_image(path: Path, colour, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _image_folder(root: Path, per_class: int = 4) -> Path:
    for name, colour in COLOURS.items():
        for i in range(per_class):
            _save_image(root / name / f"{i}.png", colour)
    return root


def _colour_of(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(round(float(v) * 255)) for v in image.mean(dim=(1, 2)))


# --- ImageFolder -------------------------------------------------------------------------------


def test_image_folder_with_split_folders(tmp_path):
    _image_folder(tmp_path / "train")
    _image_folder(tmp_path / "val", per_class=1)
    train = open_dataset(str(tmp_path), "classification", "train", size=16)
    test = open_dataset(f"imagefolder:{tmp_path}", "classification", "test", size=16)
    assert train.class_names == test.class_names == ["cat", "dog", "emu"]
    assert (len(train), len(test)) == (12, 3)
    for image, label in [*train, *test]:
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label.dtype == torch.int64
        assert _colour_of(image) == COLOURS[train.class_names[label]]


def test_a_single_image_folder_holds_out_a_fixed_test_split(tmp_path):
    _image_folder(tmp_path, per_class=10)
    train_files = set(open_dataset(str(tmp_path), "classification", "train", seed=1).files)
    test_files = set(open_dataset(str(tmp_path), "classification", "test", seed=2).files)
    assert len(test_files) == 3 and not train_files & test_files and len(train_files | test_files) == 30
    assert set(open_dataset(str(tmp_path), "classification", "test", seed=3).files) == test_files


def test_num_samples_caps_a_user_split_with_a_seeded_subset(tmp_path):
    _image_folder(tmp_path / "train", per_class=5)
    _image_folder(tmp_path / "test", per_class=1)
    first = open_dataset(str(tmp_path), "classification", "train", num_samples=6, seed=0)
    again = open_dataset(str(tmp_path), "classification", "train", num_samples=6, seed=0)
    assert len(first) == 6 and first.files == again.files


def test_image_folder_missing_directory_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="no-such-folder"):
        open_dataset(f"imagefolder:{tmp_path / 'no-such-folder'}", "classification", "train")


def test_image_folder_corrupt_image_names_the_file(tmp_path):
    _image_folder(tmp_path / "train", per_class=1)
    _image_folder(tmp_path / "test", per_class=1)
    (tmp_path / "train" / "dog" / "0.png").write_bytes(b"not a png at all")
    dataset = open_dataset(str(tmp_path), "classification", "train")
    with pytest.raises(DatasetError, match=r"dog/0\.png.*cannot decode"):
        [dataset[i] for i in range(len(dataset))]


def test_image_folder_empty_class_folder_is_an_error(tmp_path):
    _image_folder(tmp_path, per_class=2)
    (tmp_path / "yak").mkdir()
    with pytest.raises(DatasetError, match="yak.*no image files"):
        open_dataset(f"imagefolder:{tmp_path}", "classification", "train")


# --- COCO ---------------------------------------------------------------------------------------


def _coco_file(images: list[tuple[int, str]], annotations: list[dict]) -> dict:
    return {
        "images": [{"id": i, "file_name": name, "width": 40, "height": 20} for i, name in images],
        "annotations": [{"id": k, "iscrowd": 0, "area": 1.0, **a} for k, a in enumerate(annotations, 1)],
        "categories": [{"id": 7, "name": "kite"}, {"id": 3, "name": "bus"}],
    }


def test_coco_official_layout_converts_boxes_and_maps_categories(tmp_path):
    (tmp_path / "annotations").mkdir()
    _save_image(tmp_path / "train2017" / "a.jpg", (9, 9, 9), size=(40, 20))
    _save_image(tmp_path / "val2017" / "b.jpg", (9, 9, 9), size=(40, 20))
    train = _coco_file(
        [(1, "a.jpg")],
        [
            {"image_id": 1, "category_id": 7, "bbox": [4, 2, 10, 6]},
            {"image_id": 1, "category_id": 3, "bbox": [20, 10, 20, 10]},
            {"image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 20], "iscrowd": 1},
        ],
    )
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    val = _coco_file([(5, "b.jpg")], [])
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    dataset = open_dataset(str(tmp_path), "detection", "train", size=80)
    assert dataset.class_names == ["bus", "kite"]
    image, target = dataset[0]
    assert image.shape == (3, 80, 80)
    # x scales by 80/40 = 2, y by 80/20 = 4; the crowd region is not an object.
    torch.testing.assert_close(target["boxes"], torch.tensor([[8.0, 8, 28, 32], [40, 40, 80, 80]]))
    assert target["labels"].tolist() == [1, 0]
    empty = open_dataset(f"coco:{tmp_path}", "detection", "test", size=80)[0][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_coco_pooled_layout_splits_images(tmp_path):
    names = [(i, f"{i}.png") for i in range(1, 11)]
    for _, name in names:
        _save_image(tmp_path / "images" / name, (50, 50, 50), size=(40, 20))
    annotations = [{"image_id": i, "category_id": 7, "bbox": [1, 1, 5, 5]} for i, _ in names]
    (tmp_path / "annotations.json").write_text(json.dumps(_coco_file(names, annotations)))
    train = open_dataset(str(tmp_path), "detection", "train", size=32)
    test = open_dataset(str(tmp_path), "detection", "test", size=32)
    assert (len(train), len(test)) == (9, 1)
    assert {r.path for r in train.images}.isdisjoint(r.path for r in test.images)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F")
    edges = [0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]
    runs = np.diff(edges).tolist()
    return {"size": list(mask.shape), "counts": [0, *runs] if flat[0] else runs}


def _coco_train_split(root: Path, annotations: list[dict]) -> None:
    (root / "annotations").mkdir()
    _save_image(root / "train2017" / "a.jpg", (9, 9, 9), size=(40, 20))
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(_coco_file([(1, "a.jpg")], annotations)))


def test_coco_instance_masks_from_polygons_and_rle(tmp_path):
    from pycocotools import mask as coco_mask

    square = np.zeros((20, 40), np.uint8)
    square[10:20, 20:30] = 1
    compressed = coco_mask.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode("ascii")
    polygon = [[4, 2, 14, 2, 14, 8, 4, 8]]  # the rectangle of columns 4-13, rows 2-7
    _coco_train_split(
        tmp_path,
        [
            {"image_id": 1, "category_id": 7, "bbox": [4, 2, 10, 6], "segmentation": polygon},
            {"image_id": 1, "category_id": 3, "bbox": [20, 10, 10, 10], "segmentation": compressed},
            {"image_id": 1, "category_id": 3, "bbox": [20, 10, 10, 10], "segmentation": _uncompressed_rle(square)},
        ],
    )
    _, target = open_dataset(str(tmp_path), "instance-segmentation", "train", size=80)[0]
    masks = target["masks"].numpy()
    assert masks.shape == (3, 80, 80) and target["labels"].tolist() == [1, 0, 0]
    # x scales by 2, y by 4: the polygon's columns 4-13 and rows 2-7 become 8-27 and 8-31
    # (pycocotools may rasterise a polygon's far edges in: a pixel more).
    assert masks[0, 8:32, 8:28].all() and masks[0].sum() <= (32 - 8 + 4) * (28 - 8 + 2)
    assert masks[1, 40:80, 40:60].all() and masks[1].sum() == 40 * 20
    np.testing.assert_array_equal(masks[1], masks[2])
    torch.testing.assert_close(target["boxes"][1], torch.tensor([40.0, 40, 60, 80]))


def test_coco_instances_need_every_objects_segmentation(tmp_path):
    _coco_train_split(tmp_path, [{"image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match=r"instances_train2017\.json.*no segmentation"):
        open_dataset(str(tmp_path), "instance-segmentation", "train")
    assert len(open_dataset(str(tmp_path), "detection", "train")) == 1


@pytest.mark.parametrize(
    "segmentation",
    [
        "x",
        [[]],
        [[1, 2, 3]],
        [[1, 2, 3, 4, 5, 6, 7]],
        [[[1, 2], [3, 4], [5, 6]]],
        [[1, 2, 3, 4, 5, float("nan")]],  # pycocotools crashes the process on these two
        [[1, 2, 3, 4, 5, 1e12]],
        {"counts": [1, 2]},
        {"size": [20, 40], "counts": [0, -5]},
        {"size": [20, 40], "counts": [5, 5]},
        {"size": [4, 4], "counts": "0"},
        {"size": [20, 40], "counts": "zzzz"},
        {"size": [20, 40], "counts": 7},
    ],
)
def test_coco_segmentation_that_cannot_be_read_names_the_image(tmp_path, segmentation):
    annotation = {"image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "segmentation": segmentation}
    _coco_train_split(tmp_path, [annotation])
    with pytest.raises(DatasetError, match=r"a\.jpg.*segmentation is"):
        open_dataset(str(tmp_path), "instance-segmentation", "train")[0]


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("missing image", r"images/2\.png.*not found"),
        ("bad json", r"annotations\.json.*not valid JSON"),
        ("unknown category", r"annotations\.json.*unknown category ids \[99\]"),
        ("bad bbox", r"annotations\.json.*invalid bbox"),
    ],
)
def test_coco_errors_name_the_file(tmp_path, breakage, message):
    _save_image(tmp_path / "images" / "1.png", (0, 0, 0))
    annotations = [
        {
            "image_id": 1,
            "category_id": 99 if breakage == "unknown category" else 7,
            "bbox": [1, 1, -5, 5] if breakage == "bad bbox" else [1, 1, 5, 5],
        }
    ]
    images = [(1, "1.png"), (2, "2.png")] if breakage == "missing image" else [(1, "1.png")]
    text = json.dumps(_coco_file(images, annotations))
    (tmp_path / "annotations.json").write_text(text[:-5] if breakage == "bad json" else text)
    with pytest.raises(DatasetError, match=message):
        open_dataset(str(tmp_path), "detection", "train")


# --- VOC ----------------------------------------------------------------------------------------


def _palette_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    image.save(path)


def _voc(root: Path, mask: np.ndarray) -> Path:
    for split, ids in (("train", ["a", "b"]), ("val", ["c"])):
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for image_id in ids:
            _save_image(root / "JPEGImages" / f"{image_id}.jpg", (100, 100, 100), size=mask.shape[::-1])
            _palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    return root


def _voc_mask() -> np.ndarray:
    mask = np.zeros((12, 16), np.uint8)
    mask[:, 8:] = 1
    mask[0, :] = 255
    return mask


def test_voc_masks_keep_class_indices_and_ignore(tmp_path):
    _voc(tmp_path, _voc_mask())
    (tmp_path / "class_names.txt").write_text("background\nboat\n")
    train = open_dataset(str(tmp_path), "segmentation", "train", size=32)
    test = open_dataset(f"voc:{tmp_path}", "segmentation", "test", size=32)
    assert (len(train), len(test)) == (2, 1) and train.class_names == ["background", "boat"]
    image, mask = train[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1, 255}
    # Nearest-neighbour resize: mask row 0 of 12 becomes rows 0-2 of 32, column 8 of 16 column 16.
    assert (mask[:3] == 255).all() and (mask[3:, 16:] == 1).all() and (mask[3:, :16] == 0).all()


def test_voc_defaults_to_the_pascal_classes(tmp_path):
    _voc(tmp_path, _voc_mask())
    dataset = open_dataset(str(tmp_path), "segmentation", "train")
    assert len(dataset.class_names) == 21 and dataset.class_names[0] == "background"


def test_voc_mask_value_outside_the_classes_names_the_file(tmp_path):
    mask = _voc_mask()
    mask[5, 5] = 7
    _voc(tmp_path, mask)
    (tmp_path / "class_names.txt").write_text("background\nboat\n")
    with pytest.raises(DatasetError, match=r"SegmentationClass/a\.png.*\[7\]"):
        open_dataset(str(tmp_path), "segmentation", "train")[0]


def test_voc_rgb_mask_is_rejected(tmp_path):
    _voc(tmp_path, _voc_mask())
    Image.new("RGB", (16, 12)).save(tmp_path / "SegmentationClass" / "c.png")
    with pytest.raises(DatasetError, match=r"c\.png.*palette or greyscale"):
        open_dataset(str(tmp_path), "segmentation", "test")[0]


def test_voc_listed_image_without_mask_names_the_file(tmp_path):
    _voc(tmp_path, _voc_mask())
    (tmp_path / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"SegmentationClass/b\.png"):
        open_dataset(str(tmp_path), "segmentation", "train")


# --- ModelNet40 -----------------------------------------------------------------------------------


def _cloud(rng, points: int, centre: float = 5.0, scale: float = 3.0) -> np.ndarray:
    return (centre + scale * rng.standard_normal((points, 3))).astype(np.float32)


def _write_h5(path: Path, **arrays) -> None:
    with h5py.File(path, "w") as file:
        for name, array in arrays.items():
            file.create_dataset(name, data=array)


def test_modelnet40_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    for split, count in (("train", 5), ("test", 2)):
        clouds = np.stack([_cloud(rng, 2048) for _ in range(count)])
        labels = np.arange(count, dtype=np.uint8)[:, None] % 3
        _write_h5(tmp_path / f"ply_data_{split}0.h5", data=clouds, label=labels)
    train = open_dataset(str(tmp_path), "pointcloud-classification", "train", num_points=256)
    test = open_dataset(f"modelnet40:{tmp_path}", "pointcloud-classification", "test")
    assert (len(train), len(test)) == (5, 2) and train.class_names == ["airplane", "bathtub", "bed"]
    points, label = train[4]
    assert points.shape == (256, 3) and label == 1 and test[0][0].shape == (1024, 3)
    np.testing.assert_allclose(points.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(points, axis=1).max() == pytest.approx(1)


def test_modelnet40_text(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "modelnet40_shape_names.txt").write_text("night_stand\nsofa\n")
    (tmp_path / "modelnet40_train.txt").write_text("night_stand_0001\nsofa_0001\nsofa_0002\n")
    (tmp_path / "modelnet40_test.txt").write_text("night_stand_0002\n")
    for shape in ("night_stand_0001", "night_stand_0002", "sofa_0001", "sofa_0002"):
        folder = tmp_path / shape.rsplit("_", 1)[0]
        folder.mkdir(exist_ok=True)
        rows = np.concatenate([_cloud(rng, 300), rng.standard_normal((300, 3))], axis=1)
        np.savetxt(folder / f"{shape}.txt", rows, delimiter=",", fmt="%.6f")
    train = open_dataset(str(tmp_path), "pointcloud-classification", "train", num_points=500)
    assert [int(label) for _, label in train] == [0, 1, 1]
    points = train[0][0]
    assert points.shape == (500, 3)  # 300 points, topped up with repeats
    assert np.linalg.norm(points, axis=1).max() == pytest.approx(1)
    assert len(open_dataset(str(tmp_path), "pointcloud-classification", "test")) == 1


def test_corrupt_hdf5_names_the_file(tmp_path):
    (tmp_path / "shape_names.txt").write_text("airplane\n")
    (tmp_path / "ply_data_train0.h5").write_bytes(b"\x89HDF broken")
    with pytest.raises(DatasetError, match=r"ply_data_train0\.h5.*not a readable HDF5"):
        open_dataset(f"modelnet40:{tmp_path}", "pointcloud-classification", "train")


def test_hdf5_without_labels_names_the_file(tmp_path):
    (tmp_path / "shape_names.txt").write_text("airplane\n")
    _write_h5(tmp_path / "ply_data_train0.h5", data=np.zeros((2, 64, 3), np.float32))
    with pytest.raises(DatasetError, match=r"ply_data_train0\.h5.*no dataset \['label'\]"):
        open_dataset(str(tmp_path), "pointcloud-classification", "train")


def test_modelnet40_label_outside_the_classes_is_an_error(tmp_path):
    (tmp_path / "shape_names.txt").write_text("airplane\n")
    clouds = np.ones((2, 64, 3), np.float32)
    _write_h5(tmp_path / "ply_data_train0.h5", data=clouds, label=np.array([[0], [4]]))
    with pytest.raises(DatasetError, match=r"labels \[4\] outside the 1 classes"):
        open_dataset(str(tmp_path), "pointcloud-classification", "train")


def test_malformed_point_text_file_names_the_file(tmp_path):
    (tmp_path / "modelnet40_shape_names.txt").write_text("sofa\n")
    (tmp_path / "modelnet40_train.txt").write_text("sofa_0001\n")
    (tmp_path / "sofa").mkdir()
    (tmp_path / "sofa" / "sofa_0001.txt").write_text("1,2,3\n4,five,6\n")
    with pytest.raises(DatasetError, match=r"sofa_0001\.txt.*not a table of numbers"):
        open_dataset(str(tmp_path), "pointcloud-classification", "train")


# --- ShapeNet-part --------------------------------------------------------------------------------


def _parts_for(category: int, count: int, rng) -> np.ndarray:
    return FIRST_PART[category] + rng.integers(0, 2, count)


def test_shapenet_part_hdf5(tmp_path):
    rng = np.random.default_rng(2)
    for split, categories in (("train0", [0, 4]), ("val0", [15]), ("test0", [10])):
        clouds = np.stack([_cloud(rng, 300) for _ in categories])
        pid = np.stack([_parts_for(c, 300, rng) for c in categories])
        labels = np.array(categories)[:, None]
        _write_h5(tmp_path / f"ply_data_{split}.h5", data=clouds, label=labels, pid=pid)
    train = open_dataset(str(tmp_path), "pointcloud-segmentation", "train", num_points=128)
    assert len(train) == 3 and train.class_names == list(PART_NAMES) and len(PART_NAMES) == 50
    for (points, parts), category in zip(train, [0, 4, 15]):
        assert points.shape == (128, 3) and parts.shape == (128,) and parts.dtype == torch.int64
        assert {PART_NAMES[p].split("/")[0] for p in parts.tolist()} == {CATEGORY_NAMES[category]}
    test = open_dataset(f"shapenet-part:{tmp_path}", "pointcloud-classification", "test")
    assert test.class_names == list(CATEGORY_NAMES) and int(test[0][1]) == 10


def test_shapenet_part_text(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "synsetoffset2category.txt").write_text("Airplane\t02691156\nMug\t03797390\n")
    (tmp_path / "train_test_split").mkdir()
    lists = {"train": ["02691156/p1"], "val": ["03797390/m1"], "test": ["03797390/m2"]}
    for split, shapes in lists.items():
        (tmp_path / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps([f"shape_data/{s}" for s in shapes])
        )
        for shape in shapes:
            category = 0 if shape.startswith("02691156") else CATEGORY_NAMES.index("Mug")
            rows = np.concatenate(
                [_cloud(rng, 200), rng.standard_normal((200, 3)), _parts_for(category, 200, rng)[:, None]], axis=1
            )
            (tmp_path / shape).parent.mkdir(exist_ok=True)
            np.savetxt(tmp_path / f"{shape}.txt", rows, fmt="%.6f")
    train = open_dataset(str(tmp_path), "pointcloud-segmentation", "train", num_points=100)
    assert len(train) == 2
    assert {PART_NAMES[p].split("/")[0] for p in train[1][1].tolist()} == {"Mug"}
    test = open_dataset(str(tmp_path), "pointcloud-classification", "test")
    assert CATEGORY_NAMES[int(test[0][1])] == "Mug"


def test_shapenet_part_outside_its_category_is_an_error(tmp_path):
    pid = np.full((1, 64), FIRST_PART[1])  # a Bag part on an Airplane
    clouds = np.ones((1, 64, 3), np.float32)
    _write_h5(tmp_path / "ply_data_train0.h5", data=clouds, label=np.array([[0]]), pid=pid)
    with pytest.raises(DatasetError, match=r"ply_data_train0\.h5.*Airplane shape has parts \[4\]"):
        open_dataset(str(tmp_path), "pointcloud-segmentation", "train")


# --- choosing the format --------------------------------------------------------------------------


def test_unrecognised_layout_asks_for_a_format(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match=f"{tmp_path}.*<format>:<path>"):
        open_dataset(str(tmp_path), "classification", "train")


def test_a_source_refuses_tasks_it_cannot_serve(tmp_path):
    _image_folder(tmp_path)
    with pytest.raises(ValueError, match="imagefolder data serves tasks classification, generation"):
        open_dataset(str(tmp_path), "detection", "train")
    with pytest.raises(ValueError, match="shapes-2d"):
        open_dataset("shapes-2d", "pointcloud-classification", "train")
