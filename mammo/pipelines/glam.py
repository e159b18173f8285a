"""The `glam` pipeline: GLAM (Liu et al., MIDL 2021) benign/malignant scores, saliency and patch maps.

GLAM learns from image labels alone. Per image it gives the two scores, a pixel-level saliency map
per class (the global map, combined with the selected patches' maps where they lie), the K patches
it looked at, and `lesion` = the larger of the two maps thresholded.

The input is prepared as in training (`prepare_input`): the breast's bounding box (+2%), the
chest wall turned to the left, resized into the model's (h, w) keeping the aspect ratio, CLAHE and
a median filter; for weights trained "breast_only" (the shipped `glam`), also everything outside
the breast zeroed and the breast's grey levels stretched. Every map comes back in the input's
original geometry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import PatchBox, Result
from mammo.pipelines.registry import PIPELINES
from mammo.preprocess.breast import breast_mask
from mammo.preprocess.contrast import standardize_in_mask
from mammo.preprocess.framing import Framing, breast_window_and_flip, frame, frame_mask, unframe

if TYPE_CHECKING:
    from mammo.calibration import Temperature
    from mammo.models.torch_glam_predictor import GlamPredictor

CLASSES = ("benign", "malignant")
MARGIN = 0.02
WEIGHTS = {"joint": "glam-joint", "sep": "glam-sep"}
DEFAULT_SCHEME = "joint"


def prepare_input(image: np.ndarray, meta: ImageMeta | None, size: tuple[int, int],
                  mode: str = "plain") -> tuple[np.ndarray, np.ndarray, Framing]:
    """float32 (H, W) in [0, 1] -> (float32 (h, w) in [0, 1] model input, bool (h, w) breast mask
    at the model input, the `Framing` to undo it).

    The breast mask is the classical one (`mammo.preprocess.breast.breast_mask`: no background,
    no film label), framed like the image; GLAM picks its patches inside it.
    `mode` (the network's `GlamConfig.input_mode`): "plain" keeps the framed crop as it is;
    "breast_only" also zeroes everything outside the breast and stretches the breast's own
    1st-99th grey-level percentiles to [0, 1] (`standardize_in_mask`), so film labels,
    background and the scanner's grey curve cannot be learnt in place of the tissue.
    `meta` is accepted for symmetry with the pipelines (the chest-wall side comes from the image).
    """
    breast = breast_mask(image)
    window, flip = breast_window_and_flip(image, MARGIN, breast)
    x, framing = frame(image, size, window, flip)
    inside = frame_mask(breast.astype(np.uint8), framing) > 0
    if mode == "breast_only":
        x = standardize_in_mask(x, inside)
    elif mode != "plain":
        raise ValueError(f"input mode must be 'plain' or 'breast_only', not {mode!r}")
    return x, inside, framing


def box_to_original(top: int, left: int, size: tuple[int, int], framing: Framing) -> tuple[int, int, int, int]:
    """A (ph, pw) box at (top, left) of the model input -> (y0, x0, y1, x1) in original pixels."""
    lb, win = framing.letterbox, framing.window
    crop_w = win.x1 - win.x0
    ys = [(top - lb.top) / lb.scale, (top + size[0] - lb.top) / lb.scale]
    xs = [(left - lb.left) / lb.scale, (left + size[1] - lb.left) / lb.scale]
    if framing.flipped:
        xs = [crop_w - x for x in xs]
    h, w = win.shape
    y0, y1 = (int(np.clip(round(v + win.y0), 0, h)) for v in sorted(ys))
    x0, x1 = (int(np.clip(round(v + win.x0), 0, w)) for v in sorted(xs))
    return y0, x0, y1, x1


class GlamPipeline:
    """GLAM on one mammogram (see the module docstring)."""

    name = "glam"
    description = PIPELINES["glam"].description

    def __init__(self, predictor: GlamPredictor, weights_sha256: str, threshold: float = 0.5,
                 name: str = "glam", calibration: Mapping[str, Temperature] | None = None) -> None:
        self.name = name
        self.predictor = predictor
        self.weights_sha256 = weights_sha256
        self.threshold = threshold
        self.calibration = dict(calibration or {})  # class -> temperature scaling (from the manifest)

    def calibrate(self, raw: np.ndarray) -> dict[str, float]:
        """(2,) network scores -> {class: probability}; classes without calibration pass unchanged."""
        return {name: float(self.calibration[name](raw[k])) if name in self.calibration else float(raw[k])
                for k, name in enumerate(CLASSES)}

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        """image float32 (H, W) in [0, 1] -> scores, saliency (benign, malignant), patches, lesion mask.

        Every map is built on each call (no `probabilities` keyword: there is nothing to leave out):
        `saliency` benign and malignant and `probabilities["lesion"]` (their maximum), each
        float32 (H, W) in [0, 1], 0 outside the breast crop.
        """
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
        t0 = time.perf_counter()
        x, breast, framing = prepare_input(image, meta, self.predictor.input_size, self.predictor.input_mode)
        t1 = time.perf_counter()
        pred = self.predictor.predict(x, breast)
        t2 = time.perf_counter()
        # unframe keeps float32: no copy (each full-size map is ~50 MB on a 4600x2800 image)
        saliency = {name: unframe(pred.maps[k], framing, fill=0.0).astype(np.float32, copy=False)
                    for k, name in enumerate(CLASSES)}
        combined = np.maximum(saliency["benign"], saliency["malignant"])
        patches = [PatchBox(*box_to_original(int(t), int(l), pred.patch_size, framing),
                            score=float(a), label=f"patch {i + 1}")
                   for i, ((t, l), a) in enumerate(zip(pred.patch_locations, pred.attention))]
        timings = {"prepare": t1 - t0, "model": t2 - t1, "restore": time.perf_counter() - t2}
        return Result(
            masks={"lesion": combined >= self.threshold},
            probabilities={"lesion": combined},
            saliency=saliency, patches=patches,
            scores=self.calibrate(pred.scores),
            timings=timings, pipeline=self.name, weights_sha256=self.weights_sha256,
            geometry={"input_shape": tuple(image.shape), "crop_box": framing.window.box,
                      "flipped": framing.flipped, "model_input": self.predictor.input_size,
                      "raw_scores": [float(v) for v in pred.scores],
                      "calibrated": sorted(self.calibration),
                      "global_scores": [float(v) for v in pred.global_scores],
                      "local_scores": [float(v) for v in pred.local_scores],
                      "lesion_threshold": self.threshold})


def build(scheme: str = DEFAULT_SCHEME) -> GlamPipeline:
    """Registry builder: the weights trained with `scheme` ("sep" or "joint") from the manifest."""
    from mammo.models.torch_glam_predictor import GlamPredictor
    from mammo.weights import get_entry, resolve

    if scheme not in WEIGHTS:
        raise ValueError(f"scheme must be one of {sorted(WEIGHTS)}, not {scheme!r}")
    entry = get_entry(WEIGHTS[scheme])
    name = "glam" if scheme == DEFAULT_SCHEME else f"glam:{scheme}"
    calibration = entry.calibration.classes if entry.calibration is not None else None
    return GlamPipeline(GlamPredictor(resolve(entry)), entry.sha256, name=name, calibration=calibration)
