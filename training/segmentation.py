"""The segmentation task of the training engine: cascade stage 1 (tissue) and stage 2 (lesion)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mammo.metrics import SegmentationMeter
from mammo.models.frameworks import import_torch
from training.config import TrainConfig
from training.data import Framed, build_augment, load_split

torch = import_torch()
from torch.utils.data import DataLoader, Dataset  # noqa: E402  (after the framework guard)

from mammo.models.torch_aca_resunet import create_model  # noqa: E402


def skin_band(grey: np.ndarray, width: int) -> np.ndarray:
    """bool (h, w): pixels within `width` px of the breast outline (inside or out) of a framed
    image (float32 (h, w) in [0, 1]; background and letterbox are ~0). Radiologists never mark
    a lesion there, and a network that has not been told so fires on the bright skin edge."""
    import cv2

    tissue = (grey > 0.04).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(tissue, kernel) > 0) & ~(cv2.erode(tissue, kernel) > 0)


def pixel_weights(grey: np.ndarray, labels: np.ndarray, config: TrainConfig) -> np.ndarray:
    """float32 (h, w) loss weights: `config.edge_weight` on lesion-free skin-band pixels, else 1."""
    weights = np.ones(labels.shape, np.float32)
    if config.edge_weight != 1.0:
        weights[skin_band(grey, config.edge_band) & (labels == 0)] = config.edge_weight
    return weights


class AugmentedSet(Dataset):
    """Framed arrays with augmentation of the grey plane and its labels (other planes are constant).

    Items: (x float32 (C, h, w), y int64 (h, w)), plus the per-pixel loss weights float32 (h, w)
    for the lesion stage when `edge_weight` is set.
    """

    def __init__(self, data: Framed, augment=None, config: TrainConfig | None = None):
        self.data, self.augment, self.config = data, augment, config

    def __len__(self) -> int:
        return len(self.data.ids)

    def __getitem__(self, i: int):
        x, y = self.data.x[i].copy(), self.data.y[i]
        if self.augment is not None:
            out = self.augment(image=x[0], mask=y)
            x[0], y = np.clip(out["image"], 0, 1), out["mask"]
        item = (torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y)).long())
        c = self.config
        if c is not None and c.task == "lesion" and c.edge_weight != 1.0:
            item += (torch.from_numpy(pixel_weights(x[0], y, c)),)
        return item


def make_loss(config: TrainConfig) -> Callable[[Any, Any], Any]:
    """config.dice_weight * Dice loss + config.ce_weight * (cross-entropy | BCE), from smp.losses."""
    from segmentation_models_pytorch.losses import DiceLoss

    if config.task == "tissue":
        class_weights = torch.tensor(config.ce_class_weights, dtype=torch.float32) if config.ce_class_weights else None
        dice, ce = DiceLoss("multiclass"), torch.nn.CrossEntropyLoss(weight=class_weights)

        def tissue_loss(logits, y, weights=None):
            return config.dice_weight * dice(logits, y) + config.ce_weight * ce(logits, y)

        return tissue_loss
    dice = DiceLoss("binary")

    def lesion_loss(logits, y, weights=None):
        target = y.unsqueeze(1).float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=None if weights is None else weights.unsqueeze(1))
        return config.dice_weight * dice(logits, target) + config.ce_weight * bce

    return lesion_loss


def predict_labels(model, x: np.ndarray, config: TrainConfig, batch: int = 8) -> np.ndarray:
    """uint8 (N, h, w) label maps (tissue: argmax; lesion: probability > threshold)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i:i + batch]))
            if config.task == "tissue":
                out.append(logits.argmax(1).to(torch.uint8).numpy())
            else:
                out.append((torch.sigmoid(logits[:, 0]) > config.threshold).to(torch.uint8).numpy())
    return np.concatenate(out)


def validate(model, data: Framed, config: TrainConfig) -> dict[str, float]:
    """Per-image Dice/IoU per class at model resolution; "score" is the model-selection number."""
    pred = predict_labels(model, data.x, config)
    meter = SegmentationMeter()
    names = {n: v for v, n in enumerate(config.classes)} if config.task == "tissue" else {"lesion": 1}
    for p, t, kind in zip(pred, data.y, data.image_types):
        for name, value in names.items():
            meter.add(name, p == value, t == value)
            if config.task == "lesion":
                meter.add(f"lesion_{kind}", p == value, t == value)
    summary = meter.summary()
    metrics = {f"dice_{k}": v["dice"] for k, v in summary.items()}
    metrics.update({f"iou_{k}": v["iou"] for k, v in summary.items()})
    scored = ["adipose", "fibroglandular", "pectoral"] if config.task == "tissue" else ["lesion"]
    if "lesion_FILM" in summary:
        # a handful of outlined films among ~100 digital images: weigh film equally, or the
        # selected epoch may be one that ignores film altogether
        scored.append("lesion_FILM")
    metrics["score"] = meter.mean_dice(scored)
    return metrics


class SegmentationTask:
    """What the engine needs for the ACA-Atrous-ResUNet stages (see `training.tasks.Task`)."""

    metric_prefixes = ("dice", "iou", "score")

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.loss_fn = make_loss(config)

    def load_data(self) -> tuple[Framed, Framed]:
        return load_split(self.config, "train"), load_split(self.config, "val")

    def build_model(self):
        c = self.config
        return create_model(c.arch, c.encoder, c.in_channels, c.out_channels,
                            encoder_weights=c.encoder_weights or None)

    def loader(self, train: Framed) -> DataLoader:
        c = self.config
        return DataLoader(AugmentedSet(train, build_augment(c), c), batch_size=c.batch_size, shuffle=True,
                          drop_last=len(train.ids) > c.batch_size, num_workers=0)

    def loss(self, model, batch, epoch: int):
        x, y, *weights = batch
        loss = self.loss_fn(model(x), y, *weights)
        if self.config.l1_lambda > 0:
            loss = loss + self.config.l1_lambda * sum(p.abs().sum() for p in model.parameters())
        return loss

    def validate(self, model, val: Framed) -> dict[str, float]:
        return validate(model, val, self.config)

    def log_images(self, writer, model, data: Framed, epoch: int) -> None:
        n = min(self.config.val_overlays, len(data.ids))
        if n == 0:
            return
        pred = predict_labels(model, data.x[:n], self.config)
        scale = 255 // max(1, len(self.config.classes))
        for i in range(n):
            grey = (data.x[i, 0] * 255).astype(np.uint8)
            panel = np.concatenate([grey, data.y[i] * scale, pred[i] * scale], axis=1)
            writer.add_image(f"val/{data.ids[i]}", panel[None], epoch)

    def metadata(self) -> dict[str, str]:
        """The recipe stored in the safetensors header (read by `TorchSegmenter`)."""
        import json

        c = self.config
        return {"arch": c.arch, "encoder": c.encoder, "in_channels": str(c.in_channels),
                "classes": json.dumps(list(c.classes))}

    def architecture(self) -> str:
        return f"{self.config.arch}/{self.config.encoder}"
