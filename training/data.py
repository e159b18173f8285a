"""Training data: dataset samples framed exactly as the pipeline frames them, plus augmentation.

Every image is read and framed once (`mammo.preprocess.framing.frame`) and kept in memory at model
size (60 films at 256x128 or 519 CDD-CESM images at 320x224 are a few tens of MB); augmentation runs
on the framed arrays each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mammo.datasets import Sample, load_dataset
from mammo.datasets.tissue_ddsm import TISSUE_CLASSES
from mammo.preprocess.framing import breast_window_and_flip, frame, frame_mask
from training.config import TrainConfig


@dataclass
class Framed:
    """Model-size arrays of one split: x float32 (N, C, h, w), y uint8 (N, h, w), ids, types."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    image_types: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def tissue_labels(sample: Sample) -> np.ndarray:
    """uint8 (H, W): 0 background, 1 adipose, 2 fibroglandular, 3 pectoral."""
    labels = np.zeros(sample.image.shape, np.uint8)
    for value, name in enumerate(TISSUE_CLASSES[1:], start=1):
        labels[sample.masks[name]] = value
    return labels


def type_plane(image_type: str, size: tuple[int, int]) -> np.ndarray:
    """The lesion model's second input: a constant plane, 1.0 for contrast-subtracted (CM) images."""
    return np.full(size, 1.0 if image_type == "CM" else 0.0, np.float32)


def frame_sample(sample: Sample, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """One sample -> (x float32 (C, h, w), y uint8 (h, w), image type), chest wall on the left."""
    size = tuple(config.input_size)
    window, flip = breast_window_and_flip(sample.image, config.crop_margin)
    window = window if config.crop == "breast" else None
    x, framing = frame(sample.image, size, window, flip, config.clip_limit, config.median_ksize)
    if config.task == "tissue":
        y, image_type = tissue_labels(sample), "DM"
    else:
        y, image_type = sample.masks["lesion"].astype(np.uint8), str(sample.extra.get("image_type", "DM"))
    planes = [x] if config.in_channels == 1 else [x, type_plane(image_type, size)]
    return np.stack(planes), frame_mask(y, framing), image_type


def _frame_all(samples, config: TrainConfig, desc: str) -> Framed:
    xs, ys, ids, types = [], [], [], []
    for sample in tqdm(samples, desc=desc, unit="img", leave=False):
        x, y, image_type = frame_sample(sample, config)
        xs.append(x)
        ys.append(y)
        ids.append(sample.image_id)
        types.append(image_type)
    return Framed(np.stack(xs), np.stack(ys), ids, types)


def is_lesion_free(sample: Sample) -> bool:
    """True for an image whose annotation says it has no abnormality at all (MIAS `NORM`)."""
    rows = sample.extra.get("rows")
    if rows is not None:
        return all(row[0] == "NORM" for row in rows)
    return all(not mask.any() for mask in sample.masks.values())


def load_negatives(config: TrainConfig, split: str) -> Framed | None:
    """The lesion-free images of `split` of `config.negative_dataset` (None when not configured);
    with `extra_positives`, also its films whose every abnormality is outlined exactly
    (`mask_shape` "outline", from `mias-outlined`), each `extra_positives_repeat` times.

    The negatives teach the lesion stage what normal breast tissue, the skin line, the pectoral
    muscle and film labels look like, so that it stops marking them. The outlined film masses
    keep "film" from becoming a cue for "no lesion" when every other positive is digital.
    """
    if not config.negative_dataset or config.task != "lesion":
        return None
    ds = load_dataset(config.negative_dataset, config.negative_root, split=f"{config.negative_split}:{split}")
    samples = []
    for s in tqdm(ds, desc=f"negatives {split}", unit="img", leave=False):
        if is_lesion_free(s):
            s.masks["lesion"] = np.zeros(s.image.shape, bool)
            samples.append(s)
        elif config.extra_positives and s.extra.get("mask_shape") == "outline":
            samples.extend([s] * config.extra_positives_repeat)
    return _frame_all(samples, config, f"framing negatives {split}") if samples else None


def load_film_positives(config: TrainConfig, split: str) -> Framed | None:
    """The exactly outlined films of `split` of `config.negative_dataset` (for validation), or None."""
    if not (config.negative_dataset and config.extra_positives and config.task == "lesion"):
        return None
    ds = load_dataset(config.negative_dataset, config.negative_root, split=f"{config.negative_split}:{split}")
    samples = [s for s in ds if s.extra.get("mask_shape") == "outline"]
    return _frame_all(samples, config, f"framing film positives {split}") if samples else None


def concat(a: Framed, b: Framed | None) -> Framed:
    """`a` followed by `b` (b may be None)."""
    if b is None:
        return a
    return Framed(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), a.ids + b.ids,
                  a.image_types + b.image_types)


def load_split(config: TrainConfig, split: str) -> Framed:
    """Read and frame every sample of `split` ("train"/"val"/"test") of the configured dataset;
    the training split also gets the configured negatives (and outlined film positives), the
    others the outlined film positives, so that model selection sees film too."""
    ds = load_dataset(config.dataset, config.data_root, split=f"{config.split}:{split}")
    refs = ds.refs
    keep = [i for i, r in enumerate(refs) if r.info.get("image_type", "DM") in config.image_types] \
        if config.dataset == "cdd-cesm" else list(range(len(refs)))
    framed = _frame_all((ds[i] for i in keep), config, f"framing {split}")
    extra = load_negatives(config, split) if split == "train" else load_film_positives(config, split)
    return concat(framed, extra)


def build_augment(config: TrainConfig):  # -> albumentations.Compose
    """Vertical flips (a left-right flip would undo the canonical orientation), small rotations
    and shifts, brightness/contrast, Gaussian noise; elastic deformation for the lesion stage.

    "strong" widens the geometry and adds what differs between scanners and films: gamma,
    blur or sharpening, and grid distortion.
    """
    import albumentations as A

    strong = config.augment == "strong"
    rotate, scale, shift = ((-15, 15), (0.85, 1.15), 0.06) if strong else ((-10, 10), (0.92, 1.08), 0.04)
    ops = [
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=rotate, translate_percent=(-shift, shift), scale=scale, p=0.7,
                 border_mode=0, fill=0, fill_mask=0),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.15, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
    ]
    if strong:
        ops += [
            A.RandomGamma(gamma_range=(0.7, 1.5), p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.Sharpen(alpha=(0.1, 0.3))], p=0.3),
            A.GridDistortion(num_steps=5, distort_limit=0.15, border_mode=0, p=0.3),
        ]
    if config.elastic:
        ops.append(A.ElasticTransform(alpha=20, sigma=6, p=0.3, border_mode=0))
    return A.Compose(ops, seed=config.seed)
