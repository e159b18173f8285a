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
    ),
}

_LOADED: dict[str, Pipeline] = {}


def list_pipelines() -> list[str]:
    """Names of all registered pipelines, in registry order."""
    return list(PIPELINES)


def describe_pipelines() -> dict[str, PipelineSpec]:
    """name -> `PipelineSpec`, without importing any builder."""
    return dict(PIPELINES)


def get_pipeline(name: str, cache: bool = True) -> Pipeline:
    """Build (once per process when `cache`) and return the pipeline called `name`.

    Raises:
        KeyError: `name` is not registered; the message lists the valid names.
    """
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    if cache and name in _LOADED:
        return _LOADED[name]
    module_name, func_name = PIPELINES[name].builder.split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    pipeline = builder()
    if cache:
        _LOADED[name] = pipeline
    return pipeline
