"""A trained GLAM network ready for inference: one prepared image in, scores and maps out.

The safetensors file carries the network's recipe in its metadata (`config_to_metadata`, written
by `training.export`), so it is always rebuilt as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo.models.frameworks import import_torch

torch = import_torch()
from mammo.models.torch_glam import config_from_metadata, create_model, segmentation_maps  # noqa: E402


@dataclass
class GlamPrediction:
    """GLAM's answer for one image at the model's input size (h, w).

    scores: float32 (2,) fusion prediction (benign, malignant) in [0, 1].
    global_scores, local_scores: float32 (2,) the two branches' predictions.
    maps: float32 (2, h, w) pixel-level saliency (benign, malignant) in [0, 1].
    patch_locations: int (K, 2) (top, left) of each selected patch, input pixels.
    patch_size: (ph, pw). attention: float32 (K,) gated-attention weights, summing to 1.
    """

    scores: np.ndarray
    global_scores: np.ndarray
    local_scores: np.ndarray
    maps: np.ndarray
    patch_locations: np.ndarray
    patch_size: tuple[int, int]
    attention: np.ndarray


class GlamPredictor:
    """Loads GLAM weights (fp16 or fp32 file; fp32 compute) and predicts one image at a time."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("arch") != "glam":
            raise ValueError(f"{path} does not hold GLAM weights (metadata arch={meta.get('arch')!r})")
        self.config = config_from_metadata(meta)
        self.model = create_model(self.config)
        self.model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        self.model.eval()
        if threads:
            torch.set_num_threads(threads)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config.input_size)

    @property
    def input_mode(self) -> str:
        """How inputs must be prepared (`mammo.pipelines.glam.prepare_input`'s `mode`)."""
        return self.config.input_mode

    def predict(self, x: np.ndarray, breast: np.ndarray | None = None) -> GlamPrediction:
        """x: float32 (h, w) in [0, 1] at `input_size`; breast: optional bool (h, w) mask the
        patches must lie in -> `GlamPrediction`."""
        if x.shape != self.input_size:
            raise ValueError(f"expected a {self.input_size} input, got {x.shape}")
        if breast is not None and breast.shape != x.shape:
            raise ValueError(f"breast mask {breast.shape} does not match the input {x.shape}")
        with torch.inference_mode():
            mask = None if breast is None else torch.from_numpy(np.ascontiguousarray(breast, np.float32))[None, None]
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None], mask)
            # Always feathered, whatever mode the file was trained with: the blend is inference
            # only, and GLAM's own mode draws a step at every patch edge.
            maps = segmentation_maps(out, "feathered")[0].numpy()
        return GlamPrediction(
            scores=out.fusion_pred[0].numpy(), global_scores=out.global_pred[0].numpy(),
            local_scores=out.local_pred[0].numpy(), maps=maps,
            patch_locations=out.patch_locations[0].numpy(), patch_size=tuple(out.patch_size),
            attention=out.attention[0].numpy())
