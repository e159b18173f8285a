"""Pipelines: one protocol, one registry. See `registry.PIPELINES`."""

from mammo.pipelines.base import STANDARD_CLASSES, PatchBox, Pipeline, Result
from mammo.pipelines.registry import PIPELINES, describe_pipelines, get_pipeline, list_pipelines

__all__ = [
    "PIPELINES",
    "STANDARD_CLASSES",
    "PatchBox",
    "Pipeline",
    "Result",
    "describe_pipelines",
    "get_pipeline",
    "list_pipelines",
]
