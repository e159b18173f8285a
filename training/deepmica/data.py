"""DeepMiCa training data from MIAS: films at the working pixel size, pseudo-masks, patch sampling.

MIAS has no pixel-level microcalcification masks, only circles around calcification clusters
(`CALC` rows). A film's training target is `mammo.preprocess.microcalc.pseudo_mask`: the classical
detector's specks that touch an annotated circle (see `TrainConfig.deepmica_pseudo`), nothing
elsewhere. Patches are cut from the network's input view (`enhance`):

- positives: 256x256 windows that contain an annotated circle's centre at a random place in
  their central part, so the cluster and its surroundings are inside;
- negatives: windows centred on breast tissue of calcification-free films (MIAS `NORM`): the
  seed drops all-black patches, and breast tissue is where a segmenter's false specks come from.

Every image here is float32 (H, W) in [0, 1], brighter = denser; masks bool (H, W); circles are
(row, col, radius) in working pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.datasets.mias import MiasRow
from mammo.io import read_image
from mammo.preprocess.breast import breast_mask
from mammo.preprocess.microcalc import cluster_calcifications, enhance, pseudo_mask, to_pixel_size
from training.config import TrainConfig

MIAS_MM = 0.2  # mini-MIAS pixel side (the 50 µm films were averaged to 200 µm)
PATCH = 256


@dataclass
class Film:
    """One MIAS film at the working pixel size.

    enhanced: the network's input (`enhance`), 0 outside the breast. breast: bool. circles: the
    located CALC rows; pathology: "B" or "M" for each. pseudo: the training target (all False on
    films without located CALC rows). calc: any CALC row, located or not. normal: only NORM rows.
    """

    image_id: str
    patient_id: str
    enhanced: np.ndarray
    breast: np.ndarray
    circles: list[tuple[float, float, float]] = field(default_factory=list)
    pathology: list[str] = field(default_factory=list)
    pseudo: np.ndarray | None = None
    calc: bool = False
    normal: bool = False


def _circles(rows: list[MiasRow], height: int, scale: float) -> tuple[list[tuple[float, float, float]], list[str]]:
    """Located CALC rows -> (row, col, radius) in working pixels (MIAS Y counts from the bottom)."""
    located = [r for r in rows if r.cls == "CALC" and r.located]
    return ([((height - r.y) * scale, r.x * scale, r.radius * scale) for r in located],
            [r.severity or "" for r in located])


def load_film(path: Path, image_id: str, patient_id: str, rows: list[MiasRow], config: TrainConfig) -> Film:
    """Read one MIAS film, resample it to `config.deepmica_work_mm`, enhance, pseudo-label."""
    image, _ = read_image(path)
    scale = MIAS_MM / config.deepmica_work_mm
    work = to_pixel_size(image, MIAS_MM, config.deepmica_work_mm)
    breast = breast_mask(work)
    enhanced = enhance(work, config.deepmica_work_mm, breast)
    circles, pathology = _circles(rows, image.shape[0], scale)
    pseudo = (pseudo_mask(enhanced, circles, config.deepmica_work_mm, breast, **config.deepmica_pseudo)
              if circles else np.zeros(work.shape, bool))
    return Film(image_id, patient_id, enhanced, breast, circles, pathology, pseudo,
                calc=any(r.cls == "CALC" for r in rows), normal=all(r.cls == "NORM" for r in rows))


def load_films(config: TrainConfig, split: str, normal_limit: int | None = None) -> list[Film]:
    """The films of one split. MIAS (`config.dataset == "mias"`): every film with a located CALC
    row, plus the calcification-free (NORM) films, the first `normal_limit` of them by id when
    given. Any other dataset with a "calcification" mask (`deepmica-png`, `cbis-ddsm`): every
    image, its real mask as the target (`masked_film`)."""
    if config.dataset != "mias":
        return masked_films(config, split)
    refs = load_dataset("mias", config.data_root, split=f"{config.split}:{split}").refs
    calc = [r for r in refs if any(row.cls == "CALC" and row.located for row in r.info["rows"])]
    normal = [r for r in refs if all(row.cls == "NORM" for row in r.info["rows"])]
    normal = normal[:normal_limit] if normal_limit is not None else normal
    return [load_film(r.path, r.image_id, r.patient_id, r.info["rows"], config)
            for r in tqdm(calc + normal, desc=f"MIAS {split} films", unit="film", leave=False)]


def masked_films(config: TrainConfig, split: str) -> list[Film]:
    """Every image of `config.dataset`'s `split` (through `config.split` when it names a CSV)."""
    ds = load_dataset(config.dataset, config.data_root, split=f"{config.split}:{split}" if config.split else split)
    return [masked_film(ds[i], config) for i in tqdm(range(len(ds)), desc=f"{config.dataset} {split}", unit="image",
                                                     leave=False)]


def masked_film(sample, config: TrainConfig) -> Film:
    """A film from a sample with a pixel-level "calcification" mask (what the seed trains on).

    The image goes to the working pixel size from its DICOM spacing, else `deepmica_source_mm`
    (INbreast 0.07, CBIS-DDSM 0.05); the mask with it, a working pixel being calcification when
    any of its area was (a calcification of a few fine pixels must not vanish). The "circles" are
    the mask's clusters (`cluster_calcifications` with min_count=1, so a lone calcification counts
    too): centre and half the box diagonal, for the validation FROC. Pathology: the image's `malignant` label (M / B / "" unknown).
    """
    source_mm = float(np.mean(sample.meta.pixel_spacing_mm)) if sample.meta.pixel_spacing_mm else \
        config.deepmica_source_mm
    work_mm = config.deepmica_work_mm
    work = to_pixel_size(sample.image, source_mm, work_mm)
    mask = sample.masks["calcification"].astype(np.float32)
    mask = to_pixel_size(mask, source_mm, work_mm) > 0 if mask.shape == sample.image.shape else mask > 0
    if mask.shape != work.shape:
        mask = cv2.resize(mask.astype(np.uint8), work.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    breast = breast_mask(work)
    circles = [(c.centroid[0], c.centroid[1], 0.5 * float(np.hypot(c.box[2] - c.box[0], c.box[3] - c.box[1])))
               for c in cluster_calcifications(mask, work_mm, min_count=1)]
    label = sample.labels.get("malignant")
    severity = "" if label is None else ("M" if label else "B")
    return Film(sample.image_id, sample.patient_id, enhance(work, work_mm, breast), breast, circles,
                [severity] * len(circles), mask, calc=bool(mask.any()), normal=not mask.any())


def patch_at(image: np.ndarray, top: int, left: int, size: int = PATCH) -> np.ndarray:
    """The (size, size) window of `image` at (top, left), zero-padded where it leaves the image."""
    out = np.zeros((size, size), image.dtype)
    h, w = image.shape
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(h, top + size), min(w, left + size)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def positive_origin(circle: tuple[float, float, float], rng: np.random.Generator,
                    margin: int = 48, size: int = PATCH) -> tuple[int, int]:
    """Top-left of a window that holds the circle's centre at a uniform place >= `margin` px
    from its edges."""
    row, col, _ = circle
    dy, dx = rng.integers(margin, size - margin, size=2)
    return int(round(row)) - int(dy), int(round(col)) - int(dx)


def negative_origin(film: Film, rng: np.random.Generator, size: int = PATCH) -> tuple[int, int]:
    """Top-left of a window centred on a random breast pixel of `film`."""
    ys, xs = np.nonzero(film.breast)
    k = int(rng.integers(len(ys)))
    return int(ys[k]) - size // 2, int(xs[k]) - size // 2
