"""One YAML file per `tiryaki-mass` training run, read into `TiryakiConfig` (data only: unknown
or mistyped keys are errors naming the key)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("breast", "mass", "classifier")


@dataclass
class Source:
    """One data set of a run.

    `split`: the split CSV (default: the committed `splits/<kind>.csv`). `repeat`: how often each
    training image with a lesion enters an epoch (lesion-free ones enter once). `image_types`:
    CDD-CESM images to use ("DM" only: the method is
    for mammograms). `breast_labels`: "annotated" (the set's breast mask) or "classical" (the
    `breast` pipeline's threshold mask as a pseudo-label, for sets without breast outlines).
    """

    dataset: str
    root: str
    split: str = ""
    repeat: int = 1
    image_types: list[str] = field(default_factory=lambda: ["DM"])
    breast_labels: str = "annotated"


@dataclass
class TiryakiConfig:
    """Everything one run depends on; see training/configs/tiryaki_*.yaml."""

    name: str
    stage: str                                # breast | mass | classifier
    architecture: str                         # keras_tiryaki.build_from_architecture string
    input_size: list[int]                     # (h, w); classifier: (s, s)
    sources: list[Source]
    run_dir: str
    pretrained: bool = True                   # packaged ImageNet VGG16 (vgg16 encoders only)
    frozen_until: str = ""                    # VGG16 layers before this one are not trained
    breast_run: str = ""                      # mass stage: config of the breast run whose net frames the data
    mias_classes: list[str] = field(default_factory=lambda: ["CIRC", "SPIC", "MISC"])  # classifier ROIs
    epochs: int = 30
    batch_size: int = 2
    learning_rate: float = 1e-4
    patience: int = 8
    time_budget_min: float = 0.0              # stop after the first epoch past this; rerun to resume
    threads: int = 2
    seed: int = 137

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {self.stage!r}")
        if len(self.input_size) != 2:
            raise ValueError(f"input_size must be [h, w], got {self.input_size}")
        self.sources = [s if isinstance(s, Source) else _build(Source, s, "sources[]") for s in self.sources]

    @property
    def path(self) -> Path:
        return Path(self.run_dir)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid: {sorted(names)}")
    try:
        return cls(**raw)
    except TypeError as error:  # a required key is missing
        raise ValueError(f"{where}: {error}") from error


def load_config(path: str | Path) -> TiryakiConfig:
    """Parse a run's YAML file.

    Raises:
        ValueError: unknown/missing keys or a bad stage (the message names them);
        FileNotFoundError: no such file.
    """
    raw = yaml.safe_load(Path(path).read_text())
    return _build(TiryakiConfig, raw, str(path))
