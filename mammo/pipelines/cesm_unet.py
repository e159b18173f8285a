"""`cesm-unet`: the config-driven Keras UNet of the CDD-CESM tool -> lesion mask.

The input is framed exactly as in training (`prepare_input`, which `training.cesm_unet` also
calls): the breast's bounding box plus a margin, chest wall turned to the left, letterboxed to the
model size, CLAHE + median filter. With `image_channels = 2` the second plane is 1.0 for a
contrast-subtracted CESM image (`_CM_` in the file name) and 0.0 otherwise, as `cascade` does: one
network learns from both DM and CM images (the lesion is the same object) while knowing which
it sees. The probability is mapped back onto the original pixels (`unframe`, 0 outside the box),
optionally blurred, and thresholded as the `[segmentation]` section of the config says.

Keras is imported only when `build` is called, through `mammo.models.frameworks` (torch's side first).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Result
from mammo.pipelines.registry import PIPELINES
from mammo.preprocess.framing import Framing, breast_window_and_flip, frame, unframe

NAME = "cesm-unet"
CONFIG_ATTR = "mammo_config"  # HDF5 root attribute of the .weights.h5 holding the config text
_CM = re.compile(r"(^|[_-])CM([_-]|$)")


def image_type_of(name: str) -> str:
    """"CM" when a file name marks a contrast-subtracted CESM image (`P1_L_CM_CC.jpg`), else "DM"."""
    return "CM" if _CM.search(Path(name).name) else "DM"


def prepare_input(image: np.ndarray, image_type: str, size: tuple[int, int], channels: int,
                  margin: float = 0.05) -> tuple[np.ndarray, Framing]:
    """One mammogram -> the network's input and the framing to map its output back.

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser.
        image_type: "DM" or "CM" (used when `channels` == 2).
        size: model input (h, w).
        channels: 1 (image), 2 (image + CM flag plane) or 3 (the image three times, as RGB).
        margin: breast window margin (fraction of the box on each side).

    Returns:
        (float32 (h, w, channels) in [0, 1], `Framing`).
    """
    window, flip = breast_window_and_flip(image, margin)
    x, framing = frame(image, tuple(size), window, flip)
    if channels == 2:
        planes = [x, np.full_like(x, 1.0 if image_type == "CM" else 0.0)]
    else:
        planes = [x] * channels
    return np.stack(planes, axis=-1).astype(np.float32), framing


def postprocess(prob: np.ndarray, seg: dict[str, Any]) -> np.ndarray:
    """Probability float32 (H, W) in [0, 1] -> bool mask, per the `[segmentation]` settings
    (blur with `blur_size`, then probability x 255 > `threshold` when `binarize`, else > 127)."""
    if seg.get("blur"):
        prob = cv2.blur(prob, tuple(seg.get("blur_size", (3, 3))))
    threshold = seg.get("threshold", 127) if seg.get("binarize", True) else 127
    return prob * 255.0 > threshold


class CesmUnetPipeline:
    """A `KerasUNet` and the framing around it. See the module docstring."""

    name = NAME
    description = PIPELINES["cesm-unet"].description

    def __init__(self, model, config: dict[str, dict[str, Any]], weights_sha256: str = "") -> None:
        self.model, self.config = model, config
        self.weights_sha256 = weights_sha256
        m = config["model"]
        self.size = (m["image_height"], m["image_width"])
        self.channels = m["image_channels"]
        self.margin = config["train"]["crop_margin"]

    def probability(self, image: np.ndarray, image_type: str) -> tuple[np.ndarray, Framing]:
        """float32 (H, W) lesion probability in the input geometry, and the framing used."""
        x, framing = prepare_input(image, image_type, self.size, self.channels, self.margin)
        return unframe(self.model.predict(x), framing), framing

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        """image float32 (H, W) in [0, 1] -> `lesion` mask and probability in the input geometry."""
        t = time.perf_counter()
        kind = image_type_of(meta.path or "")
        prob, framing = self.probability(image, kind)
        mask = postprocess(prob, self.config["segmentation"])
        return Result(masks={"lesion": mask}, probabilities={"lesion": prob},
                      timings={"lesion": time.perf_counter() - t}, pipeline=self.name,
                      weights_sha256=self.weights_sha256,
                      geometry={"input_shape": tuple(image.shape), "flipped": framing.flipped,
                                "crop_box": framing.window.box, "image_type": kind})


def config_path(weights: Path) -> Path:
    """The config file shipped beside a `.weights.h5` file: `NAME.weights.h5` -> `NAME.config`."""
    return weights.with_name(weights.name.removesuffix(".weights.h5") + ".config")


def stored_config(weights: Path) -> str | None:
    """The config text that `training.cesm_unet.export` stored in the `.weights.h5`, or None."""
    import h5py

    with h5py.File(weights, "r") as handle:
        value = handle.attrs.get(CONFIG_ATTR)
    return value.decode() if isinstance(value, bytes) else value


def checked_config_path(weights: Path) -> Path:
    """The config beside `weights`, refused unless it is the text stored inside them (the
    manifest's sha256 covers the weights file, so this extends the integrity check to the config).

    Raises:
        WeightsIntegrityError: the config file is missing or differs from the stored one.
    """
    from mammo.weights import WeightsIntegrityError

    path = config_path(weights)
    stored = stored_config(weights)
    if stored is not None and (not path.is_file() or path.read_text() != stored):
        raise WeightsIntegrityError(f"{path} is missing or differs from the config stored in {weights}; "
                                    "re-export the weights (python -m training.cesm_unet.export CONFIG)")
    return path


def build() -> CesmUnetPipeline:
    """Registry builder: weights from the manifest (bundled or Hub), the config beside them."""
    from mammo.models.keras_unet import KerasUNet
    from mammo.pipelines.cesm_unet_config import architecture, load_config
    from mammo.weights import get_entry, resolve

    entry = get_entry(NAME)
    weights = resolve(entry)
    config = load_config(checked_config_path(weights))
    model = KerasUNet.from_files(weights, **architecture(config))
    return CesmUnetPipeline(model, config, entry.sha256)
