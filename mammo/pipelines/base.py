"""The `Pipeline` protocol and the `Result` every pipeline returns."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mammo.io.meta import ImageMeta

STANDARD_CLASSES = ("breast", "adipose", "fibroglandular", "pectoral", "lesion", "calcification")


@dataclass
class PatchBox:
    """A rectangle in input-image pixels: rows y0:y1, columns x0:x1, with an optional score."""

    y0: int
    x0: int
    y1: int
    x1: int
    score: float | None = None
    label: str = ""


@dataclass
class Finding:
    """One region a pipeline outlined on request (a box prompt) or found, with its sizes.

    Attributes:
        box: (x0, y0, x1, y1) in input pixels, x1/y1 exclusive: the prompt it answers.
        mask: bool (h, w), the outline's pixels over rows y:y+h, columns x:x+w of the input
            (`offset` (y, x)); kept as a crop because a full-size mask per box is 13 MB.
        area_px, diameter_px: pixels, and the largest distance between two of them.
        area_mm2, diameter_mm: the same in mm where the pixel spacing is known, else None.
        score: the segmenter's own confidence in the outline (LiteMedSAM's predicted IoU), [0, 1].
        malignancy: P(malignant) of the region from an ROI classifier, or None.
        malignancy_source: which classifier gave `malignancy` ("" when none did).
        label: what asked for it ("box 1", or "cascade lesion 2" when refining a pipeline's lesion).
    """

    box: tuple[float, float, float, float]
    mask: np.ndarray
    offset: tuple[int, int]
    area_px: int
    diameter_px: float
    area_mm2: float | None = None
    diameter_mm: float | None = None
    score: float | None = None
    malignancy: float | None = None
    malignancy_source: str = ""
    label: str = ""

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The outline as bool (H, W) in the input's geometry."""
        out = np.zeros(shape, bool)
        y, x = self.offset
        out[y:y + self.mask.shape[0], x:x + self.mask.shape[1]] = self.mask
        return out


@dataclass
class Result:
    """What a pipeline found in one image. Every array is in the input image's geometry.

    Attributes:
        masks: class name (see `STANDARD_CLASSES`) -> bool array (H, W), the decision.
        probabilities: class name -> float32 array (H, W) in [0, 1], where the model gives one.
            A pipeline may build some only when asked (`run(..., probabilities=True)`, see
            `run_with`): each full-size float map is ~50 MB on a 4600x2800 image. "lesion" is
            always there when the pipeline has it (the app's heat map, eval's FROC).
        saliency: class name (e.g. "benign", "malignant") -> float32 array (H, W) in [0, 1].
        patches: boxes the pipeline looked at (patch map), in input pixels.
        scores: image-level scores in [0, 1], e.g. {"benign": 0.2, "malignant": 0.7}.
        timings: step name -> seconds.
        geometry: how the pipeline's working frame maps to the input: "input_shape" (H, W),
            "crop_box" (y0, x0, y1, x1) of the breast crop, "flipped" (bool), and anything else
            the pipeline needs to state.
        pipeline: name of the pipeline that produced it.
        weights_sha256: sha256 of the weights used ("" for a pipeline without weights).
        artifacts: extra pictures the pipeline's original tool wrote, by file suffix (e.g.
            "tissue_seg" -> uint8 (H, W) or RGB (H, W, 3)); written as `<stem>_<suffix>.png`.
        findings: regions outlined one by one with their sizes (`Finding`), e.g. one per box
            prompt of `box-lesion`; their union is also in `masks`.
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    saliency: dict[str, np.ndarray] = field(default_factory=dict)
    patches: list[PatchBox] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    geometry: dict[str, object] = field(default_factory=dict)
    pipeline: str = ""
    weights_sha256: str = ""
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def check_shapes(self, shape: tuple[int, int]) -> None:
        """Raise AssertionError unless every map has shape `shape` (H, W)."""
        for group in (self.masks, self.probabilities, self.saliency):
            for name, arr in group.items():
                assert arr.shape == tuple(shape), f"{self.pipeline}:{name} {arr.shape} != {shape}"


@runtime_checkable
class Pipeline(Protocol):
    """A named method that maps one mammogram to a `Result`.

    `run` takes the image as float32 (H, W) in [0, 1], brighter = denser (what
    `mammo.io.read_image` returns), and its `ImageMeta`. A pipeline that builds some probability
    maps only on request also takes a keyword `probabilities: bool = False` (see `run_with`).
    """

    name: str
    description: str
    weights_sha256: str

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result: ...


def accepts_probabilities(pipeline: Pipeline) -> bool:
    """Whether `pipeline.run` takes the `probabilities` keyword (builds some maps only on request)."""
    return "probabilities" in inspect.signature(pipeline.run).parameters


def accepts_boxes(pipeline: Pipeline) -> bool:
    """Whether `pipeline.run` takes box prompts (the `boxes` keyword), as `box-lesion` does."""
    return "boxes" in inspect.signature(pipeline.run).parameters


def run_with(pipeline: Pipeline, image: np.ndarray, meta: ImageMeta, probabilities: bool = False,
             boxes: list[tuple[float, float, float, float]] | None = None) -> Result:
    """`pipeline.run(image, meta)`, asking for every probability map when `probabilities`, and
    passing `boxes` to a prompted pipeline.

    Pipelines whose `run` has no `probabilities` keyword build all their maps anyway and are
    called as the protocol says.

    Args:
        image: float32 (H, W) in [0, 1].
        meta: its `ImageMeta`.
        probabilities: also build the maps the pipeline leaves out by default (e.g. cascade's
            four tissue probability maps).
        boxes: (x0, y0, x1, y1) prompts in input pixels, for a pipeline that takes them.

    Raises:
        ValueError: boxes for a pipeline that takes none.
    """
    if boxes is not None:
        if not accepts_boxes(pipeline):
            raise ValueError(f"{pipeline.name} takes no boxes; box prompts are for box-lesion")
        return pipeline.run(image, meta, boxes=boxes)
    if probabilities and accepts_probabilities(pipeline):
        return pipeline.run(image, meta, probabilities=True)
    return pipeline.run(image, meta)
