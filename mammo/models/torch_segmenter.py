"""A trained segmentation network ready for inference: numpy in, probabilities out.

The safetensors file carries its own build recipe in the header metadata (`arch`, `encoder`,
`in_channels`, `classes`), written by `training.export`, so a file can never be loaded into the
wrong network by accident.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mammo.models.frameworks import import_torch

torch = import_torch()
from mammo.models.torch_aca_resunet import create_model  # noqa: E402  (after the framework guard)


def read_recipe(path: str | Path) -> dict[str, object]:
    """The build recipe stored in a safetensors file's metadata (arch, encoder, in_channels, classes)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    missing = {"arch", "encoder", "in_channels", "classes"} - set(meta)
    if missing:
        raise ValueError(f"{path}: safetensors metadata lacks {sorted(missing)}; export it with training.export")
    return {"arch": meta["arch"], "encoder": meta["encoder"], "in_channels": int(meta["in_channels"]),
            "classes": json.loads(meta["classes"])}


class TorchSegmenter:
    """Wraps a network built from `create_model` and its weights.

    Args:
        path: safetensors file (fp16 or fp32; computation is fp32 on the CPU, or on `device`).
        threads: torch intra-op threads (None: leave torch's default).
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        from safetensors.torch import load_file

        recipe = read_recipe(path)
        self.classes: list[str] = list(recipe["classes"])
        self.in_channels = int(recipe["in_channels"])
        out = len(self.classes) if len(self.classes) > 1 else 1
        self.model = create_model(str(recipe["arch"]), str(recipe["encoder"]), self.in_channels, out)
        state = {k: v.float() for k, v in load_file(str(path), device="cpu").items()}
        self.model.load_state_dict(state)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        if threads:
            torch.set_num_threads(threads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (C, h, w) in [0, 1] -> float32 (K, h, w) probabilities.

        Several classes: softmax over K (they sum to 1). One class: sigmoid, K = 1.
        """
        if x.ndim != 3 or x.shape[0] != self.in_channels:
            raise ValueError(f"expected ({self.in_channels}, h, w) input, got {x.shape}")
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None].to(self.device))[0]
            probs = torch.softmax(logits, 0) if logits.shape[0] > 1 else torch.sigmoid(logits)
        return probs.cpu().numpy()
