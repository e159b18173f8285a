"""Loading a manifest entry's safetensors file into torch."""

from __future__ import annotations

from mammo.models.frameworks import import_torch
from mammo.weights import WeightsEntry, resolve

torch = import_torch()


def load_torch_state_dict(entry: WeightsEntry) -> dict[str, torch.Tensor]:
    """Resolve and verify `entry`'s file, then load it onto the CPU, dtypes as stored (fp16 stays fp16)."""
    if entry.framework != "torch":
        raise ValueError(f"weights {entry.name!r} are for {entry.framework}, not torch")
    from safetensors.torch import load_file

    return load_file(str(resolve(entry)), device="cpu")


def safetensors_metadata(entry: WeightsEntry) -> dict[str, str]:
    """The string metadata in `entry`'s safetensors header (resolved and sha256-checked), e.g. the
    training recipe `training.export` stores there; {} when it has none."""
    from safetensors import safe_open

    with safe_open(str(resolve(entry)), framework="pt") as handle:
        return dict(handle.metadata() or {})
