"""A CenterNet-style anchor-free detector with EA or self-attention on the last backbone stage.

Backbone: strided conv stages down to stride 32, where an attention block (EA, or a non-local
self-attention block of the same shape) mixes the whole image; a top-down path (FPN-lite) brings
the features back to stride 4, where three heads predict per-class centre heatmaps, box sizes and
centre offsets. `forward` decodes in the graph (3x3 max-pool peaks, top-K), so the exported ONNX
file returns fixed-size, batchable detections.

Training contract: `centernet_targets` builds one image's dense targets, the default collate
stacks them, and `centernet_loss(model.forward_raw(images), targets)` gives the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from easerve.model_defs.attention import DEFAULT_MEMORY_SIZE, AttentionBlock2d, AttentionKind
from easerve.model_defs.layers import ConvBNReLU, init_kaiming_conv

# Images must be multiples of the deepest stride; the heads work at OUTPUT_STRIDE.
INPUT_MULTIPLE = 32
OUTPUT_STRIDE = 4
# Prior probability 0.1 of a centre: sigmoid(-2.19) = 0.1, as in CenterNet.
HEATMAP_PRIOR_BIAS = -2.19
PREDICTION_INIT_STD = 0.01
# TTFNet's elliptical gaussian: sigma = alpha * side / 6.
GAUSSIAN_ALPHA = 0.54


@dataclass(frozen=True)
class CenterNetConfig:
    attention: AttentionKind = "ea"
    num_classes: int = 6
    # Channels of the stride-4 stage; they double per stage up to 4 * width.
    width: int = 32
    # Channels of the top-down path and of the heads.
    head_dim: int = 64
    memory_size: int = DEFAULT_MEMORY_SIZE
    max_detections: int = 32
    size_loss_weight: float = 0.1
    offset_loss_weight: float = 1.0


class DetectionBackbone(nn.Module):
    """(B, 3, H, W) -> features at strides 4, 8, 16, 32; attention on the stride-32 stage."""

    def __init__(self, config: CenterNetConfig) -> None:
        super().__init__()
        w = config.width
        self.stem = ConvBNReLU(3, w // 2, stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNReLU(c_in, c_out, stride=2), ConvBNReLU(c_out, c_out))
            for c_in, c_out in ((w // 2, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w))
        )
        self.attention = AttentionBlock2d(4 * w, config.attention, config.memory_size)
        self.channels = (w, 2 * w, 4 * w, 4 * w)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_with_stem(image)[1]

    def forward_with_stem(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stride-2 stem features, and the stage features `forward` returns."""
        features = []
        stem = x = self.stem(image)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.attention(features[-1])
        return stem, features


class TopDownNeck(nn.Module):
    """FPN-lite: 1x1 laterals, nearest 2x upsampling and addition, one 3x3 conv at stride 4."""

    def __init__(self, in_channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.smooth = ConvBNReLU(dim, dim)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.laterals[-1](features[-1])
        for lateral, feature in zip(self.laterals[-2::-1], features[-2::-1]):
            x = lateral(feature) + F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.smooth(x)


def prediction_head(dim: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(dim, out_channels, 1))


class EADetector(nn.Module):
    """Detector: (B, 3, H, W) normalised image, H and W multiples of 32 -> top-K detections.

    `forward` returns (boxes (B, K, 4) float xyxy in input pixels, scores (B, K) in [0, 1],
    labels (B, K) int64), K = `max_detections`, best first. Slots beyond the image's real peaks
    have score 0; clients filter by a score threshold. `stride` is the head maps' stride and
    `input_multiple` what H and W must be multiples of.
    """

    def __init__(self, config: CenterNetConfig) -> None:
        super().__init__()
        self.config = config
        self.stride = OUTPUT_STRIDE
        self.input_multiple = INPUT_MULTIPLE
        self.backbone = DetectionBackbone(config)
        self.neck = TopDownNeck(self.backbone.channels, config.head_dim)
        self.heatmap_head = prediction_head(config.head_dim, config.num_classes)
        self.size_head = prediction_head(config.head_dim, 2)
        self.offset_head = prediction_head(config.head_dim, 2)
        self.apply(init_kaiming_conv)
        # Small prediction layers, so training starts from the prior instead of random maps.
        for head in (self.heatmap_head, self.size_head, self.offset_head):
            nn.init.normal_(head[-1].weight, std=PREDICTION_INIT_STD)
        nn.init.constant_(self.heatmap_head[-1].bias, HEATMAP_PRIOR_BIAS)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The fused stride-4 feature map, (B, head_dim, H/4, W/4)."""
        return self.neck(self.backbone(image))

    def forward_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head maps at stride 4, for training.

        "heatmap": (B, num_classes, H/4, W/4) centre logits (pre-sigmoid);
        "size": (B, 2, H/4, W/4) box (width, height) in stride-4 cells;
        "offset": (B, 2, H/4, W/4) sub-cell (x, y) offset of the centre, in cells.
        """
        return self.detection_maps(self.forward_features(image))

    def detection_maps(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' maps ("heatmap", "size", "offset", see `forward_raw`) of fused features."""
        return {
            "heatmap": self.heatmap_head(features),
            "size": self.size_head(features),
            "offset": self.offset_head(features),
        }

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_detections(self.forward_raw(image), self.config.max_detections, self.stride)


def heatmap_peaks(heatmap: torch.Tensor, max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-K 3x3 peaks of centre logits (B, C, h, w) as (scores, labels int64, cells int64),
    each (B, K); a cell is y * w + x. Needs C * h * w >= max_detections."""
    heat = heatmap.sigmoid()
    is_peak = F.max_pool2d(heat, 3, stride=1, padding=1) == heat
    # Non-peaks rank below every peak but keep distinct values, so top-K is deterministic
    # (no ties among zeros) and the same in every runtime; their reported score is 0.
    ranking = torch.where(is_peak, heat, heat - 1.0).flatten(1)
    values, index = ranking.topk(max_detections, dim=1)
    cells = heat.shape[-2] * heat.shape[-1]
    labels = torch.div(index, cells, rounding_mode="floor")
    return values.clamp(min=0.0), labels, index - labels * cells


def gather_cells(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Values of maps (B, C, h, w) at cells (B, K) -> (B, C, K)."""
    batch, channels = maps.shape[:2]
    return maps.flatten(2).gather(2, cells.unsqueeze(1).expand(batch, channels, cells.shape[1]))


def peak_boxes(raw: dict[str, torch.Tensor], cells: torch.Tensor) -> torch.Tensor:
    """xyxy boxes (B, K, 4) in head-map cells of the objects centred at `cells`."""
    width = raw["heatmap"].shape[-1]
    y = torch.div(cells, width, rounding_mode="floor")
    x = cells - y * width
    size = gather_cells(raw["size"], cells)
    offset = gather_cells(raw["offset"], cells)
    centre_x = x.to(size.dtype) + offset[:, 0]
    centre_y = y.to(size.dtype) + offset[:, 1]
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    return torch.stack((centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=-1)


def decode_detections(
    raw: dict[str, torch.Tensor], max_detections: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-K peaks of the heatmap as (boxes xyxy in input pixels, scores, labels int64).

    Graph-only ops (max-pool, top-K, gather) so the decode exports with the model. Needs
    num_classes * H/4 * W/4 >= max_detections.
    """
    scores, labels, cells = heatmap_peaks(raw["heatmap"], max_detections)
    return peak_boxes(raw, cells) * stride, scores, labels


def centre_cells(centres: torch.Tensor, heatmap_size: tuple[int, int]) -> torch.Tensor:
    """The cell (x, y) (n, 2), float, of each object centre (n, 2) given in head-map cells: the
    cell it falls in, clamped to the map. The heatmap peaks there, and there the other heads are
    read."""
    height, width = heatmap_size
    limit = torch.tensor([width - 1, height - 1], dtype=centres.dtype, device=centres.device)
    return centres.floor().clamp(min=torch.zeros_like(limit), max=limit)


def centernet_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    heatmap_size: tuple[int, int],
    num_classes: int,
    stride: int,
) -> dict[str, torch.Tensor]:
    """Dense training targets of one image, stackable across a batch by the default collate.

    boxes: (N, 4) float xyxy in input pixels; labels: (N,) int64 class indices; N may be 0.
    heatmap_size: (H/stride, W/stride). Returns
    "heatmap": (num_classes, h, w), an elliptical gaussian per object (peak exactly 1 at the
    centre cell; overlapping objects of one class take the maximum);
    "size": (2, h, w) box (width, height) in cells at each centre cell, 0 elsewhere;
    "offset": (2, h, w) centre minus its cell index, in [0, 1), at each centre cell;
    "mask": (h, w) 1.0 at the centre cells, 0 elsewhere.
    Objects sharing a centre cell keep the last one's size and offset.
    """
    height, width = heatmap_size
    boxes = boxes.to(torch.float32).reshape(-1, 4) / stride
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0.0)
    cells = centre_cells(centres, heatmap_size)
    sigma = (GAUSSIAN_ALPHA * sides / 6).clamp(min=0.5)
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    gauss_x = ((xs - cells[:, :1]) ** 2 / (2 * sigma[:, :1] ** 2)).unsqueeze(1)
    gauss_y = ((ys - cells[:, 1:]) ** 2 / (2 * sigma[:, 1:] ** 2)).unsqueeze(2)
    gaussians = torch.exp(-(gauss_x + gauss_y))
    classes = labels.to(torch.int64).reshape(-1, 1, 1).expand_as(gaussians)
    heatmap = torch.zeros(num_classes, height, width).scatter_reduce_(0, classes, gaussians, "amax")
    flat = (cells[:, 1] * width + cells[:, 0]).to(torch.int64)
    size = torch.zeros(2, height * width)
    size[:, flat] = sides.t()
    offset = torch.zeros(2, height * width)
    offset[:, flat] = (centres - cells).t()
    mask = torch.zeros(height * width)
    mask[flat] = 1.0
    return {
        "heatmap": heatmap,
        "size": size.reshape(2, height, width),
        "offset": offset.reshape(2, height, width),
        "mask": mask.reshape(height, width),
    }


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed; positives: target == 1."""
    positive = target.eq(1.0).to(logits.dtype)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = log_p.exp()
    positive_loss = positive * (1 - p) ** 2 * log_p
    negative_loss = (1 - positive) * (1 - target) ** 4 * p**2 * log_not_p
    return -(positive_loss + negative_loss).sum()


def centernet_loss(
    raw: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = CenterNetConfig.size_loss_weight,
    offset_weight: float = CenterNetConfig.offset_loss_weight,
) -> dict[str, torch.Tensor]:
    """Loss of `EADetector.forward_raw` output against batched `centernet_targets`.

    Focal loss on the heatmap, L1 on size and offset at the centre cells, each normalised by
    the number of centre cells in the batch (at least 1). Returns scalar tensors: "loss" (the total
    to back-propagate) and its terms "heatmap", "size", "offset".
    """
    mask = targets["mask"].unsqueeze(1)
    num_objects = mask.sum().clamp(min=1.0)
    heatmap = focal_loss(raw["heatmap"].float(), targets["heatmap"]) / num_objects
    size = (F.l1_loss(raw["size"].float(), targets["size"], reduction="none") * mask).sum()
    offset = (F.l1_loss(raw["offset"].float(), targets["offset"], reduction="none") * mask).sum()
    size = size / num_objects
    offset = offset / num_objects
    return {
        "loss": heatmap + size_weight * size + offset_weight * offset,
        "heatmap": heatmap,
        "size": size,
        "offset": offset,
    }
