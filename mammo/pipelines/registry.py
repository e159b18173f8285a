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
    """Where a pipeline's builder lives and what it does."""

    builder: str  # "package.module:function"
    description: str
    framework: str  # "numpy", "torch" or "keras"
    variants: tuple[str, ...] = ()  # "NAME:VARIANT" passes VARIANT to the builder; first = default


PIPELINES: dict[str, PipelineSpec] = {
    "breast": PipelineSpec(
        "mammo.pipelines.breast:build",
        "Classical breast mask and crop (threshold + largest component); no learning.",
        "numpy",
    ),
    "cascade": PipelineSpec(
        "mammo.pipelines.cascade:build",
        "ACA-Atrous-ResUNet: tissue map (adipose/fibroglandular/pectoral), then lesion mask inside "
        "the fibroglandular region.",
        "torch",
        ("breast", "fgt"),
    ),
    "glam": PipelineSpec(
        "mammo.pipelines.glam:build",
        "GLAM (weakly supervised): benign/malignant scores, saliency maps and the patch map, trained "
        "from image labels only.",
        "torch",
        ("sep", "joint"),
    ),
    "cesm-unet": PipelineSpec(
        "mammo.pipelines.cesm_unet:build",
        "Config-driven Keras UNet of the CDD-CESM tool: lesion mask (DM and CM images).",
        "keras",
    ),
}

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


def get_pipeline(name: str, cache: bool = True) -> Pipeline:
    """Build (once per process when `cache`) and return the pipeline called `name`.

    `name` is a registered name, or "NAME:VARIANT" for one of its `variants` (e.g. "glam:joint"
    for the GLAM weights trained jointly, "cascade:fgt" for the fibroglandular-box region).

    Raises:
        KeyError: `name` is not registered; the message lists the valid names.
    """
    base, variant = check_name(name)
    if cache and name in _LOADED:
        return _LOADED[name]
    module_name, func_name = PIPELINES[base].builder.split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    pipeline = builder(variant) if variant else builder()
    if cache:
        _LOADED[name] = pipeline
    return pipeline
