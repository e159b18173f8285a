"""Running pipelines on one uploaded file: reading it, building and running a pipeline, timing.

Nothing here imports gradio, torch or tensorflow: a pipeline's framework is imported by the
registry the first time that pipeline is built (`mammo.demo.loading.build_pipeline`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo.demo.errors import check_file_argument, check_name_argument
from mammo.demo.loading import build_pipeline
from mammo.demo.pipelines import availability
from mammo.errors import MammoInputError
from mammo.io import ImageMeta, read_image
from mammo.pipelines.base import Result


@dataclass
class Prediction:
    """One pipeline's output on one image, with what the page and the downloads need.

    Attributes:
        name: the pipeline name asked for ("glam:joint"); what the page, the CSV and scores.json
            call it (`result.pipeline` may name the base pipeline only).
        image: float32 (H, W) in [0, 1], as `read_image` returned it.
        meta: the `ImageMeta` of the file.
        result: the pipeline's `Result`; every map is (H, W).
        source: the uploaded file's name (its stem is the CSV's image_index).
        seconds: step -> seconds ("read", "load" (building the pipeline or waiting for the
            warm-up to build it), "run").
    """

    name: str
    image: np.ndarray
    meta: ImageMeta
    result: Result
    source: str
    seconds: dict[str, float]

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def load_image(path: str | os.PathLike[str] | None) -> tuple[np.ndarray, ImageMeta, float]:
    """Read the uploaded file: (float32 (H, W) in [0, 1], meta, seconds taken).

    Raises:
        MammoInputError: no file, not a path, or a file `read_image` refuses (the message says
        why).
    """
    check_file_argument(path)
    if not path:
        raise MammoInputError("No file: upload a mammogram (DICOM, PNG, JPEG, PGM or TIFF) first.")
    start = time.perf_counter()
    try:
        image, meta = read_image(path)
    except MammoInputError as err:  # the server's upload path means nothing to the user
        raise MammoInputError(str(err).replace(str(path), Path(path).name)) from err
    return image, meta, time.perf_counter() - start


def run_pipeline(name: str, image: np.ndarray, meta: ImageMeta, source: str, read_seconds: float = 0.0,
                 boxes: list[tuple[float, float, float, float]] | None = None,
                 labels: list[str] | None = None) -> Prediction:
    """Build `name` (first use only, or wait for the warm-up's build) and run it on the image;
    `boxes` (input pixels) and their `labels` go to a prompted pipeline (box-lesion).

    Raises:
        KeyError: unknown pipeline name. MammoInputError: it is unavailable here (the message
        says why, as the menu does). WeightsIntegrityError: the weights differ from the manifest.
    """
    available, reason = availability(name)
    if not available:  # say why in the words of the menu, before trying to build it
        raise MammoInputError(f"Pipeline {name!r} is unavailable: {reason}.")
    start = time.perf_counter()
    pipeline = build_pipeline(name)
    loaded = time.perf_counter()
    result = pipeline.run(image, meta) if boxes is None else pipeline.run(image, meta, boxes=boxes, labels=labels)
    result.check_shapes(image.shape)
    seconds = {"read": read_seconds, "load": loaded - start, "run": time.perf_counter() - loaded}
    return Prediction(name, image, meta, result, source, seconds)


def predict_file(path: str | os.PathLike[str] | None, name: str) -> Prediction:
    """Read one file and run one pipeline on it (see `load_image`, `run_pipeline`).

    Raises:
        MammoInputError: also when `name` is not a str (an API client sent a list).
    """
    check_name_argument(name)
    image, meta, read_seconds = load_image(path)
    return run_pipeline(name, image, meta, Path(path or "").name, read_seconds)
