"""One dataclass per run; YAML is data only; `key=value` overrides on the command line."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mammo.datasets.tissue_ddsm import TISSUE_CLASSES

TASKS = ("tissue", "lesion", "glam", "deepmica")
GLAM_CLASSES = ("benign", "malignant")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are also the Ray Tune search-space keys."""

    name: str = "run"
    task: str = "tissue"                 # "tissue" (4-class), "lesion" (binary) or "glam" (image labels)
    dataset: str = "tissue-ddsm"         # a `mammo.datasets` kind
    data_root: str = "../shared/data/tissue_ddsm"
    split: str = "splits/tissue_ddsm.csv"
    image_types: list[str] = field(default_factory=lambda: ["DM", "CM"])  # cdd-cesm only
    arch: str = "aca_resunet"            # aca_resunet | unet | aca_unet
    encoder: str = "resnet34"
    encoder_weights: str = ""            # "imagenet": packaged weights (mammo.models.pretrained); "": random
    input_size: list[int] = field(default_factory=lambda: [256, 128])  # (h, w), multiples of 32
    crop: str = "none"                   # "none" (whole image) or "breast" (breast bounding box)
    crop_margin: float = 0.05            # margin around the crop box, as a fraction of its size
    clip_limit: float = 2.0
    median_ksize: int = 3
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    t0: int = 10                         # CosineAnnealingWarmRestarts T_0 (epochs)
    t_mult: int = 2
    dice_weight: float = 0.5
    ce_weight: float = 0.5               # cross-entropy (tissue) or BCE (lesion)
    ce_class_weights: list[float] = field(default_factory=list)  # tissue: per-class CE weights ([] = equal)
    l1_lambda: float = 0.0               # L1 penalty on the weights (5e-5 in the original)
    elastic: bool = False                # elastic transform in the augmentation
    augment: str = "standard"            # "standard" or "strong" (adds gamma, blur/sharpen, grid distortion, dropout)
    # Lesion stage: lesion-free images added to the training set as negatives (all-zero masks),
    # e.g. negative_dataset=mias (its NORM images of negative_split's train rows).
    negative_dataset: str = ""
    negative_root: str = ""
    negative_split: str = ""
    extra_positives: bool = False        # also add negative_dataset's exactly outlined film masses as positives
    extra_positives_repeat: int = 1      # how many times each such film enters the training set
    edge_weight: float = 1.0             # lesion BCE weight of lesion-free pixels near the skin line
    edge_band: int = 12                  # width of that band, in model pixels
    time_budget_min: float = 0.0         # stop after the first epoch that ends past this (0: no budget)
    threshold: float = 0.5               # lesion probability threshold for Dice
    init_from: str = ""                  # start from this run's best.pt (fine-tuning); "" = random
    # GLAM (task "glam"): the model's recipe (see mammo.models.torch_glam.GlamConfig)
    glam_scheme: str = "joint"           # "joint" (all losses at once) or "sep" (global, then local)
    glam_global_epochs: int = 0          # "sep": epochs of the global phase before the local one
    glam_global_width: int = 16          # base width of the ResNet-22-style global network
    glam_num_patches: int = 6            # K patches chosen from the saliency maps
    glam_patch_size: list[int] = field(default_factory=lambda: [96, 96])  # (h, w) in input pixels
    glam_top_t: float = 0.03             # top-t fraction pooled from each saliency map (GLAM: 0.03)
    glam_local_stride: int = 8           # output stride of the local ResNet-18 (GLAM: 4; 8 is ~3x cheaper)
    glam_local_stages: int = 3           # 4: the whole ResNet-18; 3: without its last stage (1/4 the size)
    saliency_l1: float = 1e-4            # weight of the L1 sparsity term on the global saliency
    glam_global_encoder: str = "resnet22"  # or "efficientnet_lite0" (ImageNet with encoder_weights=imagenet)
    glam_local_encoder: str = "resnet18"   # or "efficientnet_lite0"
    glam_encoder_init: str = ""          # both EfficientNet-Lite0 modules start from this segmenter's encoder
                                         # (a run's best.pt or a .safetensors of the cascade lesion stage)
    glam_balance: bool = False           # weigh each class's positives by n_negative / n_positive (train split)
    glam_input_mode: str = "plain"       # "plain" or "breast_only" (background zeroed, breast grey levels stretched)
    # Further labelled sets trained together with `dataset` (each a mapping with keys dataset,
    # data_root, split and optional image_types); validation reports each source's AUCs apart.
    glam_sources: list[dict] = field(default_factory=list)
    glam_select: str = "mean"            # score = "mean" of benign+malignant AUC, or "malignant" (mean over sources)
    # DeepMiCa (task "deepmica"): the patch segmenter on MIAS pseudo-masks (training.deepmica)
    deepmica_work_mm: float = 0.2        # pixel side the network sees (MIAS's 200 µm; the pipeline's too)
    deepmica_source_mm: float = 0.2      # pixel side of images without a DICOM spacing (INbreast 0.07, CBIS 0.05)
    deepmica_pseudo: dict = field(default_factory=lambda: {"k": 4.0, "min_contrast": 0.04})  # detector kwargs
    deepmica_positives: int = 8          # patches per annotated circle per epoch
    deepmica_negatives: float = 1.0      # calcification-free patches per positive patch
    deepmica_topk: int = 3               # hard negative pixels kept per positive pixel (the seed's top-k BCE)
    deepmica_min_negatives: int = 256    # hard negative pixels kept per patch at least (empty patches count)
    deepmica_val_normal: int = 12        # NORM films of the validation split scored each epoch
    seed: int = 0
    threads: int = 2
    out_dir: str = "runs"
    val_overlays: int = 4

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        if len(self.input_size) != 2 or any(s % 32 for s in self.input_size):
            raise ValueError(f"input_size must be [h, w], multiples of 32, got {self.input_size}")
        if self.crop not in ("none", "breast"):
            raise ValueError(f"crop must be 'none' or 'breast', not {self.crop!r}")
        if self.encoder_weights not in ("", "imagenet"):
            raise ValueError(f"encoder_weights must be '' or 'imagenet', not {self.encoder_weights!r}")
        if self.encoder_weights == "imagenet" and self.task == "glam":
            if "efficientnet_lite0" not in (self.glam_global_encoder, self.glam_local_encoder):
                raise ValueError("encoder_weights=imagenet for GLAM needs glam_global_encoder or "
                                 "glam_local_encoder = efficientnet_lite0 (the ResNets have no packaged weights)")
        elif self.encoder_weights == "imagenet":
            from mammo.models.pretrained import SOURCES

            if self.encoder not in SOURCES:
                raise ValueError(f"encoder_weights=imagenet: no packaged ImageNet weights for encoder "
                                 f"{self.encoder!r} (available: {', '.join(SOURCES)}); set encoder_weights= "
                                 f"(empty) to train it from scratch")
        if self.augment not in ("standard", "strong"):
            raise ValueError(f"augment must be 'standard' or 'strong', not {self.augment!r}")
        if self.ce_class_weights and (self.task != "tissue" or len(self.ce_class_weights) != len(TISSUE_CLASSES)):
            raise ValueError(f"ce_class_weights: one weight per tissue class {TISSUE_CLASSES}, tissue task only")
        if self.extra_positives_repeat < 1:
            raise ValueError(f"extra_positives_repeat must be at least 1, got {self.extra_positives_repeat}")
        for source in self.glam_sources:
            if not isinstance(source, dict) or not {"dataset", "data_root", "split"} <= set(source):
                raise ValueError(f"glam_sources: each entry needs dataset, data_root and split, got {source!r}")
        if self.glam_input_mode not in ("plain", "breast_only"):
            raise ValueError(f"glam_input_mode must be 'plain' or 'breast_only', not {self.glam_input_mode!r}")
        if self.glam_select not in ("mean", "malignant"):
            raise ValueError(f"glam_select must be 'mean' or 'malignant', not {self.glam_select!r}")
        if self.glam_scheme not in ("joint", "sep"):
            raise ValueError(f"glam_scheme must be 'joint' or 'sep', not {self.glam_scheme!r}")

    @property
    def classes(self) -> tuple[str, ...]:
        return {"tissue": TISSUE_CLASSES, "glam": GLAM_CLASSES, "deepmica": ("calcification",)}.get(self.task, ("lesion",))

    @property
    def out_channels(self) -> int:
        """Network outputs: one logit per tissue class (softmax), one for the lesion (sigmoid)."""
        return len(self.classes) if len(self.classes) > 1 else 1

    @property
    def in_channels(self) -> int:
        """Tissue, GLAM: the grey image. Lesion: grey image + a constant plane = 1 for CM images."""
        return 2 if self.task == "lesion" else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _parse_value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word is a string


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (safe_load: data only) and apply `key=value` overrides.

    Raises:
        ValueError: an unknown key (named) or a malformed override.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        data.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        data[key.strip()] = _parse_value(raw.strip())
    known = _field_types()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} in {path or 'overrides'}; "
                         f"valid keys: {', '.join(known)}")
    return TrainConfig(**data)


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
