"""`tiryaki-mass`: breast mask (U-net5L) -> mass mask (U-net++) -> benign/malignant per mass (VGG16).

The method of Tiryaki & Kaplanoglu (Keras), with the framing of `mammo.pipelines.tiryaki_prep`:

1. U-net5L segments the breast on the whole letterboxed image; its largest component, holes
   filled, is the breast mask.
2. U-net++ segments masses on the breast alone (background zeroed, cropped, chest wall left).
   Each 8-connected component of `probability >= MASS_THRESHOLD` with at least
   `MIN_MASS_FRACTION` of the model input's area is a mass, its detection score the component's
   maximum probability.
3. The ROI classifier gives each mass P(malignant) (`ROI_CONTEXT` x its extent, see
   `tiryaki_prep.roi_window`).

Outputs: masks "breast" and "lesion" (the kept masses), probability "lesion" (U-net++'s, 0 outside
the breast box), one `PatchBox` per mass (label "mass k", score P(malignant)), best detection
first, and image scores {"malignant": max over masses of P(malignant) (0 with no mass),
"benign": 1 - that}. `geometry["masses"]` lists each mass: box, area, detection score,
P(malignant).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mammo.io.meta import ImageMeta
from mammo.metrics import candidate_regions
from mammo.pipelines.base import PatchBox, Result
from mammo.pipelines.registry import PIPELINES
from mammo.pipelines.tiryaki_prep import breast_input, clean_mask, mass_input, roi_input, roi_window
from mammo.preprocess.breast import crop_to_breast
from mammo.preprocess.framing import Framing, unframe

NAME = "tiryaki-mass"
ENTRIES = ("tiryaki-breast", "tiryaki-mass", "tiryaki-classifier")
MASS_THRESHOLD = 0.5
MIN_MASS_FRACTION = 1e-4  # of the U-net++ input area: 10 px at 320x320; smaller blobs are noise
MAX_MASSES = 8            # classified per image, best detection first


def full_size_mask(small: np.ndarray, framing: Framing) -> np.ndarray:
    """bool (h, w) at model size -> bool (H, W) in the original geometry (nearest)."""
    return unframe(small.astype(np.uint8), framing, nearest=True).astype(bool)


def predict_breast(net: Any, image: np.ndarray) -> np.ndarray:
    """U-net5L `net` on float32 (H, W) in [0, 1] -> bool breast mask (H, W)."""
    x, framing = breast_input(image, net.input_size)
    prob = net(x[None])[0, ..., 0]
    return full_size_mask(clean_mask(prob >= 0.5), framing)


def find_masses(prob: np.ndarray, threshold: float, min_area: float) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Components of `prob >= threshold` (float32 (H, W)) with at least `min_area` pixels.

    Returns:
        ([{"box": (y0, x0, y1, x1), "area": px, "detection": max prob, "component": id}], best
        detection first; the int32 (H, W) component labels).
    """
    labels, scores, boxes, areas = candidate_regions(prob, threshold)
    masses = [{"box": tuple(int(v) for v in boxes[k]), "area": int(areas[k]), "detection": float(scores[k]),
               "component": k + 1} for k in range(scores.size) if areas[k] >= min_area]
    masses.sort(key=lambda m: -m["detection"])
    return masses, labels


class TiryakiPipeline:
    """The three networks (`mammo.models.keras_tiryaki.KerasNet`) and their framing."""

    name = NAME
    description = PIPELINES[NAME].description

    def __init__(self, breast_net: Any, mass_net: Any, classifier: Any, weights_sha256: str = "") -> None:
        self.breast_net, self.mass_net, self.classifier = breast_net, mass_net, classifier
        self.weights_sha256 = weights_sha256

    def breast(self, image: np.ndarray) -> np.ndarray:
        """float32 (H, W) in [0, 1] -> bool breast mask (H, W)."""
        return predict_breast(self.breast_net, image)

    def mass_probability(self, image: np.ndarray, breast: np.ndarray) -> tuple[np.ndarray, Framing]:
        """float32 (H, W) U-net++ mass probability in the input geometry (0 outside the breast)."""
        x, framing = mass_input(image, breast, self.mass_net.input_size)
        prob = unframe(self.mass_net(x[None])[0, ..., 0], framing)
        return np.where(breast, prob, np.float32(0.0)).astype(np.float32), framing

    def classify(self, image: np.ndarray, breast: np.ndarray, masses: list[dict[str, Any]]) -> list[float]:
        """P(malignant) of each mass (its box's centre and larger side give the ROI)."""
        if not masses:
            return []
        box = crop_to_breast(breast, breast)[1]
        size = self.classifier.input_size[0]
        rois = []
        for m in masses:
            y0, x0, y1, x1 = m["box"]
            ry, rx, side = roi_window((y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0), box)
            rois.append(roi_input(image, ry, rx, side, size))
        return [float(p) for p in self.classifier(np.stack(rois))[:, 0]]

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        """image float32 (H, W) in [0, 1] -> `Result` (see the module docstring)."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        breast = self.breast(image)
        timings["breast"] = time.perf_counter() - t
        t = time.perf_counter()
        prob, framing = self.mass_probability(image, breast)
        scale = framing.letterbox.scale
        masses, labels = find_masses(prob, MASS_THRESHOLD, MIN_MASS_FRACTION * np.prod(self.mass_net.input_size) / scale ** 2)
        masses = masses[:MAX_MASSES]
        lesion = np.isin(labels, [m["component"] for m in masses]) if masses else np.zeros(image.shape, bool)
        timings["mass"] = time.perf_counter() - t
        t = time.perf_counter()
        for m, p in zip(masses, self.classify(image, breast, masses)):
            m["malignant"] = p
        timings["classify"] = time.perf_counter() - t
        malignant = max((m["malignant"] for m in masses), default=0.0)
        patches = [PatchBox(*m["box"], score=m["malignant"], label=f"mass {i + 1}") for i, m in enumerate(masses)]
        return Result(
            masks={"breast": breast, "lesion": lesion}, probabilities={"lesion": prob}, patches=patches,
            scores={"malignant": malignant, "benign": 1.0 - malignant}, timings=timings, pipeline=self.name,
            weights_sha256=self.weights_sha256,
            geometry={"input_shape": tuple(image.shape), "crop_box": framing.window.box, "flipped": framing.flipped,
                      "masses": [{k: v for k, v in m.items() if k != "component"} for m in masses]})


def build() -> TiryakiPipeline:
    """Registry builder: the three weights files of the manifest (bundled or Hub), sha256 checked."""
    from mammo.models.keras_tiryaki import KerasNet
    from mammo.weights import get_entry, resolve

    nets, hashes = [], []
    for name in ENTRIES:
        entry = get_entry(name)
        nets.append(KerasNet.load(entry.architecture, tuple(entry.input_size), str(resolve(entry))))
        hashes.append(entry.sha256)
    return TiryakiPipeline(*nets, weights_sha256="+".join(h[:16] for h in hashes))
