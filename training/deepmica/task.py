"""The engine task "deepmica": DeepMiCa's patch UNet trained on MIAS pseudo-masks.

`python -m training.train --config training/configs/deepmica_seg.yaml` runs it with the shared
engine (checkpoints every epoch, `--resume`, curves.png, TensorBoard); `python -m training.export
RUN --name deepmica-seg --pipeline deepmica` ships it. Data: `training.deepmica.data`.

Loss: the seed's top-k BCE (`Step2_Segmentation/_03_Train/Losses.py`): per patch, the BCE of every
calcification pixel plus the `deepmica_topk` x as many hardest background pixels; here at least
`deepmica_min_negatives` of them, so patches without calcification (the seed had none after
`reduce_patches.py`; here they are half the batch) teach the network what is not one.

Validation (each epoch, picks best.pt): the whole pipeline's segmentation and clustering on the
validation split's CALC films and its first `deepmica_val_normal` NORM films. score = cluster
sensitivity at <= 1 false cluster per film (`mammo.metrics.froc_sensitivities`) + 0.25 x the
pixel Dice against the pseudo-masks (a tie-break: 3 validation circles give 4 sensitivity values).
"""

from __future__ import annotations

import json

import numpy as np

from mammo.metrics import dice_iou, froc_sensitivities
from mammo.models.frameworks import import_torch
from training.config import TrainConfig
from training.deepmica.data import PATCH, Film, load_films, negative_origin, patch_at, positive_origin
from training.deepmica.evaluate import detections

torch = import_torch()
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from mammo.models.torch_deepmica import TorchNet, build_patch_unet  # noqa: E402


def augmenter():
    """Flips, 90° turns and mild intensity changes (albumentations); exact for the tiny masks."""
    import albumentations as A

    return A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(),
                      A.RandomGamma(gamma_limit=(85, 115), p=0.5),
                      A.RandomBrightnessContrast(0.05, 0.1, p=0.5)])


class PatchSampler(Dataset):
    """Random patches each epoch: `positives` per annotated circle, then breast patches of
    calcification-free films (see `negative_films`).

    Items: (x float32 (1, 256, 256) in [0, 1], y float32 (1, 256, 256) in {0, 1}).
    """

    def __init__(self, films: list[Film], config: TrainConfig) -> None:
        self.circles = [(f, c) for f in films for c in f.circles]
        # Calcification-free films when there are (MIAS NORM); else any film, its mask kept (the seed's
        # INbreast and CBIS-DDSM images all hold calcifications, and it trains on all their patches).
        self.negative_films = [f for f in films if f.normal] or films
        if not self.circles:
            raise ValueError("no annotated calcification (MIAS CALC circle or mask) in the training split")
        self.n_pos = len(self.circles) * config.deepmica_positives
        self.n_neg = round(self.n_pos * config.deepmica_negatives)
        self.augment = augmenter()

    def __len__(self) -> int:
        return self.n_pos + self.n_neg

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(np.random.randint(2**31))  # the engine seeds numpy's global state
        if i < self.n_pos:
            film, circle = self.circles[i % len(self.circles)]
            top, left = positive_origin(circle, rng)
            y = patch_at(film.pseudo.astype(np.uint8), top, left)
        else:
            film = self.negative_films[int(rng.integers(len(self.negative_films)))]
            top, left = negative_origin(film, rng)
            y = patch_at(film.pseudo.astype(np.uint8), top, left)
        x = patch_at(film.enhanced, top, left)
        out = self.augment(image=x, mask=y)
        return out["image"][None].astype(np.float32), out["mask"][None].astype(np.float32)


def topk_bce(logits, target, k: int, min_negatives: int):
    """Mean BCE over every positive pixel and the max(k x positives, min_negatives) hardest
    negatives of each patch. logits, target: (N, 1, H, W)."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    kept = []
    for per_pixel, truth in zip(loss.flatten(1), target.flatten(1)):
        positive = truth > 0.5
        negatives = per_pixel[~positive]
        n = min(negatives.numel(), max(k * int(positive.sum()), min_negatives))
        kept += [per_pixel[positive], torch.topk(negatives, n, sorted=False).values]
    return torch.cat(kept).mean()


class DeepMicaSegTask:
    """What the engine needs (see `training.tasks.Task`)."""

    metric_prefixes = ("sens", "fp", "dice", "score")

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def load_data(self) -> tuple[list[Film], list[Film]]:
        c = self.config
        return load_films(c, "train"), load_films(c, "val", normal_limit=c.deepmica_val_normal)

    def build_model(self):
        c = self.config
        return build_patch_unet(c.encoder, pretrained=c.encoder_weights == "imagenet")

    def loader(self, train: list[Film]) -> DataLoader:
        return DataLoader(PatchSampler(train, self.config), batch_size=self.config.batch_size, shuffle=True,
                          drop_last=True, num_workers=0)

    def loss(self, model, batch, epoch: int):
        x, y = batch
        return topk_bce(model(x), y, self.config.deepmica_topk, self.config.deepmica_min_negatives)

    def predict(self, model, films: list[Film]) -> list[np.ndarray]:
        """float32 (H, W) calcification probability of each film (0 outside its breast)."""
        from mammo.pipelines.deepmica import segment

        net = TorchNet(model, batch_size=self.config.batch_size)
        return [segment(net, f.enhanced)[0] * f.breast for f in films]

    def validate(self, model, val: list[Film]) -> dict[str, float]:
        c = self.config
        probs = self.predict(model, val)
        dets = [detections(p >= c.threshold, p, f.circles, c.deepmica_work_mm) for p, f in zip(probs, val)]
        sens = froc_sensitivities(dets, (0.25, 1.0))
        fp = float(np.mean([sum(not h for h in d.hits) for d in dets]))
        dice, _ = dice_iou(np.concatenate([(p >= c.threshold).ravel() for p in probs]),
                           np.concatenate([f.pseudo.ravel() for f in val]))
        return {"sens_at_1fp": sens[1.0], "sens_at_0.25fp": sens[0.25], "fp_clusters_per_film": fp,
                "dice_pseudo": dice, "score": sens[1.0] + 0.25 * dice}

    def log_images(self, writer, model, val: list[Film], epoch: int) -> None:
        """Input | pseudo-mask | prediction, cropped around the first validation circles."""
        films = [f for f in val if f.circles][: self.config.val_overlays]
        for film, prob in zip(films, self.predict(model, films)):
            r, c, _ = film.circles[0]
            top, left = int(r) - PATCH // 2, int(c) - PATCH // 2
            panel = np.concatenate([patch_at(a.astype(np.float32), top, left)
                                    for a in (film.enhanced, film.pseudo, prob)], axis=1)
            writer.add_image(f"val/{film.image_id}", (panel * 255).astype(np.uint8)[None], epoch)

    def metadata(self) -> dict[str, str]:
        c = self.config
        return {"arch": "unet", "encoder": c.encoder, "in_channels": "1", "classes": json.dumps(list(c.classes)),
                "work_mm": str(c.deepmica_work_mm)}

    def architecture(self) -> str:
        return f"unet/{self.config.encoder}"
