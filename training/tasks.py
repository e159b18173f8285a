"""The tasks the training engine runs: one explicit table of lazy "module:class" strings.

A task turns a `TrainConfig` into data, a network, a loss and validation metrics; the engine
(`training.engine.train`) owns the loop, checkpoints, resume, TensorBoard and metrics.json, and
`training.export` uses the same task to re-validate and to describe the exported weights.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from training.config import TrainConfig

TASKS: dict[str, str] = {
    "tissue": "training.segmentation:SegmentationTask",
    "lesion": "training.segmentation:SegmentationTask",
    "glam": "training.glam_task:GlamTask",
    "deepmica": "training.deepmica.task:DeepMicaSegTask",
}


class Task(Protocol):
    """What a task provides. `validate` returns floats including "score" (higher is better)."""

    metric_prefixes: tuple[str, ...]  # validation keys logged under val/ and exported as val_*

    def load_data(self) -> tuple[Any, Any]: ...
    def build_model(self) -> Any: ...
    def loader(self, train: Any) -> Any: ...
    def loss(self, model: Any, batch: Any, epoch: int) -> Any: ...
    def validate(self, model: Any, val: Any) -> dict[str, float]: ...
    def log_images(self, writer: Any, model: Any, val: Any, epoch: int) -> None: ...
    def metadata(self) -> dict[str, str]: ...
    def architecture(self) -> str: ...


def get_task(config: TrainConfig) -> Task:
    """The task object for `config.task`."""
    module, name = TASKS[config.task].split(":")
    return getattr(importlib.import_module(module), name)(config)
