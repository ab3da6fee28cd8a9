"""Instance segmentation: the shapes of the first scene found as detection finds them, each
instance's mask also on the shape's visible pixels."""

from __future__ import annotations

from pycocotools import mask as coco_mask

from easerve.loadtest.judges.detection import MIN_BOX_IOU, MIN_BOX_RECALL, shapes_found
from easerve.loadtest.samples import SampleSet

MIN_MASK_IOU = 0.5


def check_instances(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Recall of the scene's shapes as `check_detect` counts it, each instance's mask also with
    IoU >= MIN_MASK_IOU against the shape's visible pixels."""
    scene = samples.scenes[0]
    found = answer["results"][0]["instances"]
    sizes = {tuple(instance["mask"]["size"]) for instance in found}
    truths = scene.maps["instances"]
    if sizes - {truths.shape}:
        return False, f"mask sizes {sorted(sizes)}, expected {truths.shape}"
    masks = [coco_mask.decode(instance["mask"]) > 0 for instance in found]

    def mask_matches(shape: int, index: int) -> bool:
        truth = truths == shape + 1
        return (masks[index] & truth).sum() >= MIN_MASK_IOU * (masks[index] | truth).sum()

    matched = shapes_found(scene, found, mask_matches)
    recall = matched / len(scene.labels)
    detail = f"{matched}/{len(scene.labels)} shapes found (box IoU >= {MIN_BOX_IOU}, mask IoU >= {MIN_MASK_IOU})"
    return recall >= MIN_BOX_RECALL, detail
