"""Search spaces: a YAML mapping over `TrainConfig` field names -> a Ray Tune `param_space`.

Each key is a training-config field; its value is either a plain value (fixed for every trial) or
a one-key mapping naming the distribution:

    lr: {loguniform: [1.0e-4, 3.0e-3]}
    weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
    batch_size: {choice: [4, 8]}
    dice_weight: {uniform: [0.3, 0.7]}
    t0: {randint: [5, 20]}                 # high excluded
    crop_margin: {quniform: [0.0, 0.1, 0.02]}
    input_size: {choice: [[256, 128], [320, 160]]}
    encoder: {grid_search: [resnet18, resnet34]}
    epochs: 10

An unknown field or distribution is a ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig


def _numbers(values: Any, name: str, kind: str, count: tuple[int, ...]) -> list[float]:
    """[low, high(, q)] as floats; YAML reads `1e-4` (no dot) as a string, so strings are parsed."""
    if not isinstance(values, list) or len(values) not in count:
        raise ValueError(f"search space field {name!r}: {kind} takes a list of {' or '.join(map(str, count))} "
                         f"numbers, got {values!r}")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as error:
        raise ValueError(f"search space field {name!r}: {kind} needs numbers, got {values!r}") from error


def _options(values: Any, name: str, kind: str) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"search space field {name!r}: {kind} takes a non-empty list, got {values!r}")
    return values


def _builders() -> dict[str, Callable[[Any, str], Any]]:
    """Distribution name -> function(values, field name) -> a Ray Tune sampler."""
    from ray import tune

    return {
        "loguniform": lambda v, n: tune.loguniform(*_numbers(v, n, "loguniform", (2,))),
        "uniform": lambda v, n: tune.uniform(*_numbers(v, n, "uniform", (2,))),
        "quniform": lambda v, n: tune.quniform(*_numbers(v, n, "quniform", (3,))),
        "qloguniform": lambda v, n: tune.qloguniform(*_numbers(v, n, "qloguniform", (3,))),
        "randint": lambda v, n: tune.randint(*(int(x) for x in _numbers(v, n, "randint", (2,)))),
        "choice": lambda v, n: tune.choice(_options(v, n, "choice")),
        "grid_search": lambda v, n: tune.grid_search(_options(v, n, "grid_search")),
    }


def read_space(path: str | Path) -> dict[str, Any]:
    """The raw YAML mapping of a search-space file, its keys checked against `TrainConfig`.

    Raises:
        ValueError: not a mapping, or a key that is not a training-config field (named).
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a search space is a mapping of training-config fields")  # noqa: TRY004 (as load_config)
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown training-config field(s) {', '.join(unknown)} in the search space; "
                         f"valid fields: {', '.join(fields)}")
    return raw


def to_param_space(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn the YAML mapping into Ray Tune samplers (plain values stay fixed).

    Raises:
        ValueError: an unknown distribution name (named, with the valid ones).
    """
    builders = _builders()
    space: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in builders:
                raise ValueError(f"search space field {name!r}: expected one of {', '.join(builders)} "
                                 f"as the only key, got {sorted(value)}")
            kind, values = next(iter(value.items()))
            space[name] = builders[kind](values, name)
        else:
            space[name] = value
    return space


def load_space(path: str | Path) -> dict[str, Any]:
    """`read_space` then `to_param_space`: the `param_space` for `ray.tune.Tuner`."""
    return to_param_space(read_space(path))
