"""Label names of the generated data sets the bundled models are trained on.

Torch-free, so the data generators and the registry share one list.
"""

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse", "hexagon")
# Segmentation masks use 0 for background and 1 + class index for each shape.
SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *SHAPE_CLASSES)

PRIMITIVE_CLASSES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
# One global part list; each primitive owns a contiguous range. Objects are rotated only about
# the up (z) axis, so "top" and "bottom" stay distinguishable, as in ShapeNet-part.
PRIMITIVE_PARTS: tuple[str, ...] = (
    "sphere/surface",
    "cube/top",
    "cube/bottom",
    "cube/side",
    "cylinder/top",
    "cylinder/bottom",
    "cylinder/side",
    "cone/base",
    "cone/side",
    "torus/outer",
    "torus/inner",
    "pyramid/base",
    "pyramid/side",
)
