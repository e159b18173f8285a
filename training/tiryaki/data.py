"""Training data of the three `tiryaki-mass` networks, framed by the pipeline's own functions
(`mammo.pipelines.tiryaki_prep`), from committed patient-level splits.

- breast: (x, y) at the U-net5L size; y = the set's breast mask ("annotated", tissue-ddsm: all but
  background) or the classical threshold mask ("classical", for sets without breast outlines).
- mass: (x, y) at the U-net++ size, framed with the breast mask of the trained U-net5L (the
  cascade as it runs). Images with an exact lesion mask only: CDD-CESM DM, mias-outlined films
  whose every mass is outlined (`repeat` times), and lesion-free films (all-zero masks, once).
- classifier: abnormality ROIs (centre, extent, label malignant 0/1) cut on the fly, so that every
  epoch sees them shifted, scaled, flipped and rotated: MIAS Info.txt circles (extent = diameter),
  or, for other labelled sets such as CBIS-DDSM, each component of the lesion mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.datasets.mias_outlined import to_uint8
from mammo.pipelines.tiryaki_prep import breast_input, mass_input
from mammo.preprocess.breast import CropWindow, breast_mask, crop_to_breast
from mammo.preprocess.framing import frame_mask
from training.cesm_unet.data import KerasFramed
from training.tiryaki.config import Source, TiryakiConfig

OUTLINED = ("outline", "none")  # mias-outlined films usable as exact masks: all masses outlined, or normal


def open_source(source: Source, part: str) -> Any:
    """The `part` ("train"/"val"/"test") of a source: `load_dataset` with its split CSV."""
    split = f"{source.split}:{part}" if source.split else part
    return load_dataset(source.dataset, source.root, split=split)


def _usable(source: Source, ref: Any) -> bool:
    kind = ref.info.get("image_type", "DM")
    return source.dataset != "cdd-cesm" or kind in source.image_types


def _stack(items: list[tuple[np.ndarray, np.ndarray, str, str]], where: str) -> KerasFramed:
    if not items:
        raise ValueError(f"{where}: no usable image")
    xs, ys, ids, types = zip(*items)
    return KerasFramed(np.stack(xs), np.stack(ys).astype(np.float32), list(ids), list(types))


def breast_data(config: TiryakiConfig, part: str) -> KerasFramed:
    """U-net5L inputs and breast targets of `part` (training images repeated `repeat` times)."""
    size = tuple(config.input_size)
    items = []
    for source in config.sources:
        ds = open_source(source, part)
        for sample in tqdm(ds, desc=f"breast {source.dataset} {part}", leave=False):
            if source.breast_labels == "classical":
                target = breast_mask(sample.image)
            elif "breast" in sample.masks:
                target = sample.masks["breast"]
            else:
                continue
            x, framing = breast_input(sample.image, size)
            y = frame_mask(target.astype(np.uint8), framing)[..., None]
            items += [(x, y, sample.image_id, source.dataset)] * (source.repeat if part == "train" else 1)
    return _stack(items, f"{config.name} {part}")


def mass_target(source: Source, sample: Any) -> np.ndarray | None:
    """The exact lesion mask of a sample, all False for a normal film, None when not exact."""
    if source.dataset == "mias-outlined":
        if sample.extra.get("mask_shape") not in OUTLINED:
            return None
        return sample.masks.get("lesion", np.zeros(sample.image.shape, bool))
    return sample.masks.get("lesion")


def mass_data(config: TiryakiConfig, part: str, breast_net: Any) -> KerasFramed:
    """U-net++ inputs and mass targets of `part`, framed with `breast_net`'s breast masks."""
    from mammo.pipelines.tiryaki import predict_breast

    size = tuple(config.input_size)
    items = []
    for source in config.sources:
        ds = open_source(source, part)
        for index, ref in enumerate(tqdm(ds.refs, desc=f"mass {source.dataset} {part}", leave=False)):
            if not _usable(source, ref):
                continue
            sample = ds[index]
            target = mass_target(source, sample)
            if target is None:
                continue
            x, framing = mass_input(sample.image, predict_breast(breast_net, sample.image), size)
            y = frame_mask(target.astype(np.uint8), framing)[..., None]
            kind = "positive" if target.any() else "negative"
            # Only positives are repeated: lesion-free films are plentiful (117 MIAS training films).
            copies = source.repeat if part == "train" and kind == "positive" else 1
            items += [(x, y, sample.image_id, kind)] * copies
    return _stack(items, f"{config.name} {part}")


@dataclass
class Roi:
    """One abnormality: its film (uint8 (H, W)), the film's breast box, centre (row, col), extent
    (px), label."""

    image: np.ndarray
    box: CropWindow
    cy: float
    cx: float
    extent: float
    malignant: int
    image_id: str
    cls: str


def _mias_film_rois(config: TiryakiConfig, ds: Any, index: int) -> list[Roi]:
    """A MIAS film's Info.txt abnormalities with a centre, a radius and B/M, of `mias_classes`."""
    ref = ds.refs[index]
    rows = [r for r in ref.info["rows"] if r.located and r.severity in ("B", "M") and r.cls in config.mias_classes]
    if not rows:
        return []
    film = ds[index].image
    box = crop_to_breast(film, breast_mask(film))[1]
    image = to_uint8(film)
    return [Roi(image, box, image.shape[0] - r.y, r.x, 2.0 * r.radius, int(r.severity == "M"), ref.image_id, r.cls)
            for r in rows]


def _mask_rois(ds: Any, index: int) -> list[Roi]:
    """One ROI per 8-connected lesion-mask component of a labelled image (e.g. CBIS-DDSM)."""
    import cv2

    sample = ds[index]
    malignant = sample.labels.get("malignant")
    if malignant is None or "lesion" not in sample.masks:
        return []
    n, _, stats, _ = cv2.connectedComponentsWithStats(sample.masks["lesion"].astype(np.uint8), connectivity=8)
    box = crop_to_breast(sample.image, breast_mask(sample.image))[1]
    image = to_uint8(sample.image)
    rois = []
    for x, y, w, h, _ in stats[1:]:
        rois.append(Roi(image, box, y + h / 2, x + w / 2, float(max(w, h)), int(malignant), sample.image_id, "mask"))
    return rois


def classifier_rois(config: TiryakiConfig, part: str) -> list[Roi]:
    """The ROIs of `part`: MIAS Info.txt circles for `mias`, lesion-mask components of labelled
    images for any other set."""
    rois: list[Roi] = []
    for source in config.sources:
        ds = open_source(source, part)
        for index in range(len(ds.refs)):
            rois += _mias_film_rois(config, ds, index) if source.dataset == "mias" else _mask_rois(ds, index)
    if not rois:
        raise ValueError(f"{config.name} {part}: no ROI (MIAS classes {config.mias_classes}, or labelled lesion masks)")
    return rois


def cache_path(config: TiryakiConfig, part: str) -> Path:
    return config.path / "cache" / f"{part}.npz"


def cached(config: TiryakiConfig, part: str, key: str, build: Any) -> KerasFramed:
    """`build()` cached as `run_dir/cache/<part>.npz`, rebuilt when `key` changes."""
    path = cache_path(config, part)
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        if str(data["key"]) == key:
            return KerasFramed(data["x"], data["y"], list(data["ids"]), list(data["types"]))
    framed = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=framed.x, y=framed.y, ids=np.array(framed.ids), types=np.array(framed.types), key=np.array(key))
    tmp.replace(path)
    return framed
