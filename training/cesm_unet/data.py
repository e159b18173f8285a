"""Training/evaluation data for `cesm-unet`: a folder pair or a mammo data set split, framed once.

Two sources, chosen by the `[train]`/`[eval]`/`[test]` section:

- `images_dir` + `masks_dir` (the original tool's layout): every image in `images_dir` with a
  same-stem mask in `masks_dir` (any of .png/.jpg/.jpeg/.bmp/.tif); the mask is read as grey,
  blurred and thresholded as `[mask]` says;
- `dataset` + `data_root` + `split_csv` + `split` (+ `image_types`): `mammo.datasets.load_dataset`
  with a committed patient-level split; samples without a lesion mask are skipped.

Every image is framed by `mammo.pipelines.cesm_unet.prepare_input`, the pipeline's own function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.io import read_image
from mammo.pipelines.cesm_unet import image_type_of, prepare_input
from mammo.preprocess.framing import frame_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".dcm")


@dataclass
class KerasFramed:
    """x float32 (N, h, w, C) in [0, 1]; y float32 (N, h, w, 1) in {0, 1}; ids; "DM"/"CM" types.

    Channels last, as Keras wants them; `training.data.Framed` is the channels-first twin for torch.
    """

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    types: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def list_images(folder: str | Path) -> list[Path]:
    """Image files of `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_mask(path: Path, shape: tuple[int, int], mask_cfg: dict[str, Any]) -> np.ndarray:
    """A mask file -> bool (H, W): grey, optional blur, > threshold (0..255) when binarize."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"cannot read mask {path}")
    if grey.shape != tuple(shape):
        raise ValueError(f"mask {path} is {grey.shape}, its image is {shape}")
    if mask_cfg.get("blur"):
        grey = cv2.blur(grey, tuple(mask_cfg["blur_size"]))
    return grey > (mask_cfg["threshold"] if mask_cfg.get("binarize", True) else 127)


def find_mask(masks_dir: Path, stem: str) -> Path | None:
    """The mask file with stem `stem` in `masks_dir`, or None."""
    for suffix in IMAGE_SUFFIXES:
        candidate = masks_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _frame_one(image: np.ndarray, mask: np.ndarray, kind: str, config: dict) -> tuple[np.ndarray, np.ndarray]:
    m = config["model"]
    x, framing = prepare_input(image, kind, (m["image_height"], m["image_width"]), m["image_channels"],
                               config["train"]["crop_margin"])
    return x, frame_mask(mask.astype(np.uint8), framing).astype(np.float32)[..., None]


def _stack(items: list[tuple[np.ndarray, np.ndarray, str, str]], where: str) -> KerasFramed:
    if not items:
        raise ValueError(f"{where}: no image with a mask found")
    xs, ys, ids, types = zip(*items)
    return KerasFramed(np.stack(xs), np.stack(ys), list(ids), list(types))


def load_folder(section: dict[str, Any], config: dict) -> KerasFramed:
    """Images of `images_dir` with same-stem masks in `masks_dir` (images without one are skipped)."""
    masks_dir = Path(section["masks_dir"])
    items = []
    for path in list_images(section["images_dir"]):
        mask_path = find_mask(masks_dir, path.stem)
        if mask_path is None:
            continue
        image, _ = read_image(path)
        kind = image_type_of(path.name)
        x, y = _frame_one(image, read_mask(mask_path, image.shape, config["mask"]), kind, config)
        items.append((x, y, path.stem, kind))
    return _stack(items, f"{section['images_dir']} + {masks_dir}")


def load_split(section: dict[str, Any], config: dict) -> KerasFramed:
    """The `split` part of `dataset` (a mammo data set kind) under `split_csv`."""
    from mammo.datasets import load_dataset

    split = f"{section['split_csv']}:{section['split']}"
    ds = load_dataset(section["dataset"], section["data_root"], split=split)
    items = []
    for ref_index, ref in enumerate(ds.refs):
        kind = ref.info.get("image_type", image_type_of(ref.path.name))
        if kind not in section["image_types"]:
            continue
        sample = ds[ref_index]
        if "lesion" not in sample.masks:
            continue
        x, y = _frame_one(sample.image, sample.masks["lesion"], kind, config)
        items.append((x, y, sample.image_id, kind))
    return _stack(items, f"{section['dataset']} {section['split']}")


def load_section(section: dict[str, Any], config: dict, cache_dir: Path | None = None,
                 tag: str = "") -> KerasFramed:
    """KerasFramed data of a [train]/[eval]/[test] section, cached as `cache_dir/<tag>.npz` when given
    (the framing of 359 CDD-CESM images takes ~1 min on 2 cores; the cache is keyed by the
    section, the [model] size/channels and the [mask] settings)."""
    loader = load_folder if section["images_dir"] is not None else load_split
    if cache_dir is None:
        return loader(section, config)
    m = config["model"]
    key = repr((sorted(section.items()), m["image_height"], m["image_width"], m["image_channels"],
                sorted(config["mask"].items()), config["train"]["crop_margin"]))
    path = Path(cache_dir) / f"{tag}.npz"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if str(cached["key"]) == key:
            return KerasFramed(cached["x"], cached["y"], list(cached["ids"]), list(cached["types"]))
    data = loader(section, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=data.x, y=data.y, ids=np.array(data.ids), types=np.array(data.types), key=np.array(key))
    return data


class Augmenter:
    """Batches of (x, y) with random vertical flips and brightness/contrast jitter (a left-right
    flip would undo the canonical chest-wall-left orientation that `frame` establishes)."""

    def __init__(self, data: KerasFramed, batch_size: int, seed: int, augment: bool) -> None:
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(np.ceil(len(self.data) / self.batch_size))

    def epoch(self):
        """Yield (x, y) float32 batches for one epoch, in a new random order."""
        order = self.rng.permutation(len(self.data))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x, y = self.data.x[idx].copy(), self.data.y[idx].copy()
            if self.augment:
                x, y = self._jitter(x, y)
            yield x, y

    def endless(self):
        """`epoch()` after `epoch()` forever: Keras draws `len(self)` batches per epoch."""
        while True:
            yield from self.epoch()

    def _jitter(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for i in range(len(x)):
            if self.rng.random() < 0.5:
                x[i], y[i] = x[i, ::-1], y[i, ::-1]
            gain, bias = self.rng.uniform(0.85, 1.15), self.rng.uniform(-0.08, 0.08)
            planes = slice(0, 1) if x.shape[-1] == 2 else slice(None)  # not the CM flag plane
            x[i, ..., planes] = np.clip(x[i, ..., planes] * gain + bias, 0.0, 1.0)
        return x, y
