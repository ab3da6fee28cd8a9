"""An instance segmenter: the CenterNet-style detector plus YOLACT-style mask assembly.

The detector (`detection.EADetector`, EA or self-attention on its stride-32 stage) finds each
object's centre, class and box. A prototype branch turns the fused stride-4 features, upsampled
and joined with the stem's stride-2 features, into P prototype masks at stride 2; a coefficient
head predicts, at every centre cell, P mixing weights plus two weights of an elliptical prior
around the object's own box (what tells apart two touching objects of one class, which share
prototypes). An instance's mask is sigmoid(coefficients . prototypes + prior), kept inside its
box (with a margin). `forward` decodes in the graph: the exported ONNX file returns the top-K
detections with their masks in input pixels, fixed-size and batchable.

Training contract: `instance_targets` lists a batch's objects; the loss is the detector's
(`detection.centernet_loss`) plus `mask_loss`, binary cross-entropy inside each true box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from easerve.model_defs.detection import (
    OUTPUT_STRIDE,
    CenterNetConfig,
    EADetector,
    centre_cells,
    gather_cells,
    heatmap_peaks,
    peak_boxes,
    prediction_head,
)
from easerve.model_defs.layers import ConvBNReLU, init_kaiming_conv

MASK_STRIDE = 2
# Masks are kept this many mask cells beyond the box, so a box a little too small cuts no mask.
BOX_MARGIN = 1.0
# The prior's terms are (distance from the box centre / half the box side)^2 per axis.
PRIOR_TERMS = 2


@dataclass(frozen=True)
class InstanceConfig(CenterNetConfig):
    width: int = 24
    head_dim: int = 48
    max_detections: int = 16
    num_prototypes: int = 16
    # Channels of the stride-2 prototype branch.
    prototype_dim: int = 24
    mask_loss_weight: float = 1.0


class PrototypeBranch(nn.Module):
    """Stride-4 features + stride-2 stem features -> (B, P, H/2, W/2) prototype masks."""

    def __init__(self, head_dim: int, stem_dim: int, prototype_dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(head_dim, prototype_dim)
        self.lateral = nn.Conv2d(stem_dim, prototype_dim, 1)
        self.smooth = ConvBNReLU(prototype_dim, prototype_dim)
        self.out = nn.Conv2d(prototype_dim, num_prototypes, 1)

    def forward(self, features: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(features), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.smooth(x + self.lateral(stem)))


def box_window(boxes: torch.Tensor, height: int, width: int, margin: float = BOX_MARGIN) -> torch.Tensor:
    """1.0 where a cell's centre lies in a box (B, K, 4) xyxy in cells, widened by `margin`
    cells, else 0.0: (B, K, height, width)."""
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device) + 0.5
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device) + 0.5
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))
    inside_x = (xs >= x0 - margin) & (xs <= x1 + margin)
    inside_y = (ys >= y0 - margin) & (ys <= y1 + margin)
    return (inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)).to(boxes.dtype)


def mask_logits(coefficients: torch.Tensor, prototypes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mask logits (B, K, h, w) of K objects from their coefficients (B, P + 2, K), the image's
    prototypes (B, P, h, w) and their boxes (B, K, 4) xyxy in mask cells."""
    batch, num_prototypes, height, width = prototypes.shape
    mixing = coefficients[:, :num_prototypes].transpose(1, 2)
    mixed = torch.matmul(mixing, prototypes.flatten(2)).unflatten(2, (height, width))
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device) + 0.5
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device) + 0.5
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = ((boxes[..., 2:] - boxes[..., :2]) / 2).clamp(min=1.0)
    across = ((xs - centre[..., 0, None]) / half[..., 0, None]) ** 2
    down = ((ys - centre[..., 1, None]) / half[..., 1, None]) ** 2
    weight_x = coefficients[:, num_prototypes].unsqueeze(-1).unsqueeze(-1)
    weight_y = coefficients[:, num_prototypes + 1].unsqueeze(-1).unsqueeze(-1)
    return mixed + weight_x * across.unsqueeze(-2) + weight_y * down.unsqueeze(-1)


class EAInstanceSegmenter(EADetector):
    """(B, 3, H, W) normalised image, H and W multiples of 32 -> top-K instances.

    `forward` returns (boxes (B, K, 4) float xyxy in input pixels, scores (B, K) in [0, 1],
    labels (B, K) int64, masks (B, K, H, W) float in [0, 1] (assembled at stride 2, upsampled
    bilinearly; 0 outside the box), best first; slots beyond the image's real peaks have score 0.
    """

    def __init__(self, config: InstanceConfig) -> None:
        super().__init__(config)
        stem_dim = config.width // 2
        self.prototypes = PrototypeBranch(config.head_dim, stem_dim, config.prototype_dim, config.num_prototypes)
        self.coefficient_head = prediction_head(config.head_dim, config.num_prototypes + PRIOR_TERMS)
        self.prototypes.apply(init_kaiming_conv)
        self.coefficient_head.apply(init_kaiming_conv)

    def forward_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The detector's raw maps (`EADetector.forward_raw`) plus "prototypes" (B, P, H/2, W/2)
        and "coefficients" (B, P + 2, H/4, W/4)."""
        stem, stages = self.backbone.forward_with_stem(image)
        features = self.neck(stages)
        return {
            **self.detection_maps(features),
            "prototypes": self.prototypes(features, stem),
            "coefficients": self.coefficient_head(features),
        }

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.forward_raw(image)
        scores, labels, cells = heatmap_peaks(raw["heatmap"], self.config.max_detections)
        boxes = peak_boxes(raw, cells) * OUTPUT_STRIDE
        coefficients = gather_cells(raw["coefficients"], cells)
        logits = mask_logits(coefficients, raw["prototypes"], boxes / MASK_STRIDE)
        # Sized by the image (not scaled by 2), so the graph's masks are declared (H, W) like its input.
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        window = box_window(boxes, image.shape[-2], image.shape[-1], BOX_MARGIN * MASK_STRIDE)
        return boxes, scores, labels, logits.sigmoid() * window


@dataclass(frozen=True)
class InstanceTargets:
    """A batch's true objects, one row each: the image they are in (n,), their centre cell on
    the stride-4 maps (n,), their boxes (n, 4) xyxy in mask cells and masks (n, H/2, W/2) as the
    fraction of each mask cell they cover."""

    image: torch.Tensor
    cells: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


def instance_targets(targets: list[dict[str, torch.Tensor]], heatmap_size: tuple[int, int]) -> InstanceTargets:
    """The objects of a batch of canonical instance targets (boxes in input pixels, masks (k, H,
    W)); centre cells as `detection.centernet_targets` places them."""
    width = heatmap_size[1]
    images, cells, boxes, masks = [], [], [], []
    for index, target in enumerate(targets):
        pixel_boxes = target["boxes"].reshape(-1, 4).to(torch.float32)
        centre = centre_cells((pixel_boxes[:, :2] + pixel_boxes[:, 2:]) / 2 / OUTPUT_STRIDE, heatmap_size).long()
        images.append(torch.full_like(centre[:, 0], index))
        cells.append(centre[:, 1] * width + centre[:, 0])
        boxes.append(pixel_boxes / MASK_STRIDE)
        masks.append(F.avg_pool2d(target["masks"].float().unsqueeze(1), MASK_STRIDE).squeeze(1))
    return InstanceTargets(torch.cat(images), torch.cat(cells), torch.cat(boxes), torch.cat(masks))


def mask_loss(raw: dict[str, torch.Tensor], objects: InstanceTargets) -> torch.Tensor:
    """Binary cross-entropy of each true object's mask, assembled from the coefficients at its
    centre cell and its true box, over the cells inside that box; mean over objects (0 with
    none)."""
    if objects.image.numel() == 0:
        return raw["coefficients"].sum() * 0.0
    coefficients = raw["coefficients"].flatten(2)[objects.image, :, objects.cells].unsqueeze(-1)
    prototypes = raw["prototypes"][objects.image]
    boxes = objects.boxes.to(prototypes.dtype).unsqueeze(1)
    logits = mask_logits(coefficients.float(), prototypes.float(), boxes).squeeze(1)
    window = box_window(boxes, *prototypes.shape[-2:]).squeeze(1)
    loss = F.binary_cross_entropy_with_logits(logits, objects.masks, reduction="none") * window
    return (loss.sum(dim=(1, 2)) / window.sum(dim=(1, 2)).clamp(min=1.0)).mean()
