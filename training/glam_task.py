"""The GLAM task of the training engine: benign/malignant from image labels only (mini-MIAS).

Targets per image: (benign, malignant) = (any B finding, any M finding); normal images are (0, 0).
The MIAS circles are never read here: they only measure the saliency's localisation later
(`python -m eval`). Inputs are prepared exactly as the `glam` pipeline prepares them
(`mammo.pipelines.glam.prepare_input`), so training and inference see the same pictures.

Schemes (the authors' two): "joint" trains global, local and fusion outputs together; "sep"
trains the global module alone for `glam_global_epochs`, then local and fusion with the global
module frozen.

Pretraining (`dataset: cdd-cesm`): 182 MIAS films are too few to learn what a lesion looks like from
scratch, so the global module can first learn it from another set's outlines: its malignant
saliency maps are trained to cover the CDD-CESM lesion masks (BCE against the mask's area fraction
in each saliency cell). A MIAS
run then starts from that (`init_from`). MIAS's own circles are still never used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.metrics import roc_auc
from mammo.models.frameworks import import_torch
from training.config import TrainConfig

torch = import_torch()
from torch.utils.data import DataLoader, Dataset

from mammo.models import torch_glam


@dataclass
class LabelledImages:
    """Prepared inputs of one split: x float32 (N, 1, h, w) in [0, 1], y float32 (N, 2), ids,
    breast uint8 (N, h, w) in {0, 1} (where patches may go), the dataset kind of each image
    (`sources`), and for pretraining the lesion masks uint8 (N, h, w) in {0, 1}."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    breast: np.ndarray
    masks: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def glam_config(config: TrainConfig) -> torch_glam.GlamConfig:
    """The network recipe of a training config."""
    return torch_glam.GlamConfig(
        input_size=tuple(config.input_size), global_width=config.glam_global_width,
        num_patches=config.glam_num_patches, patch_size=tuple(config.glam_patch_size),
        top_t_percent=config.glam_top_t, local_stride=config.glam_local_stride,
        local_stages=config.glam_local_stages, global_encoder=config.glam_global_encoder,
        local_encoder=config.glam_local_encoder, input_mode=config.glam_input_mode)


def sources_of(config: TrainConfig) -> list[dict]:
    """The labelled sets of a run: the config's own dataset first, then `glam_sources`."""
    first = {"dataset": config.dataset, "data_root": config.data_root, "split": config.split,
             "image_types": config.image_types}
    return [first, *config.glam_sources]


def load_labelled(config: TrainConfig, split: str) -> LabelledImages:
    """Read and prepare every image of `split` of each configured source (labels only, no masks)."""
    from mammo.pipelines.glam import prepare_input
    from mammo.preprocess.framing import frame_mask

    pretrain = config.dataset == "cdd-cesm" and not config.glam_sources
    xs, ys, ids, masks, breasts, kinds = [], [], [], [], [], []
    for source in sources_of(config):
        ds = load_dataset(source["dataset"], source["data_root"], split=f"{source['split']}:{split}")
        types = source.get("image_types") or ["DM", "CM"]
        keep = [i for i, r in enumerate(ds.refs) if r.info.get("image_type", "CM") in types]
        for i in tqdm(keep, desc=f"preparing {source['dataset']} {split}", unit="img", leave=False):
            sample = ds[i]
            x, breast, framing = prepare_input(sample.image, sample.meta, tuple(config.input_size),
                                               config.glam_input_mode)
            xs.append(x[None])
            breasts.append(breast.astype(np.uint8))
            ys.append([float(sample.labels["benign"] or 0), float(sample.labels["malignant"] or 0)])
            ids.append(sample.image_id)
            kinds.append(source["dataset"])
            if pretrain:
                lesion = sample.masks.get("lesion", np.zeros(sample.image.shape, bool))
                masks.append(frame_mask(lesion.astype(np.uint8), framing))
    return LabelledImages(np.stack(xs).astype(np.float32), np.asarray(ys, np.float32), ids, np.stack(breasts),
                          np.stack(masks) if pretrain else None, kinds)


class AugmentedImages(Dataset):
    """Prepared images with label-preserving augmentation (albumentations)."""

    def __init__(self, data: LabelledImages, augment=None) -> None:
        self.data, self.augment = data, augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x = self.data.x[i, 0]
        mask = self.data.masks[i] if self.data.masks is not None else np.zeros(x.shape, np.uint8)
        breast = self.data.breast[i]
        if self.augment is not None:
            out = self.augment(image=x, masks=[mask, breast])
            x, (mask, breast) = np.clip(out["image"], 0, 1), out["masks"]
        return (torch.from_numpy(np.ascontiguousarray(x[None], np.float32)), torch.from_numpy(self.data.y[i]),
                torch.from_numpy(np.ascontiguousarray(mask, np.float32)),
                torch.from_numpy(np.ascontiguousarray(breast[None], np.float32)))


def build_augment(config: TrainConfig):  # -> albumentations.Compose
    """Vertical flips (a left-right flip would undo the canonical orientation), small affine moves,
    brightness/contrast and noise: none changes whether a lesion is in the image. With
    `augment: strong`, also height and width scaled apart (one source is stretched to squares),
    gamma, blur or sharpening and a coarse grid distortion, so no source's look is a shortcut."""
    import albumentations as A

    if config.augment == "strong":
        return A.Compose([
            A.VerticalFlip(p=0.5),
            A.Affine(rotate=(-15, 15), translate_percent=(-0.06, 0.06), scale={"x": (0.75, 1.25), "y": (0.85, 1.15)},
                     p=0.8, border_mode=0, fill=0, fill_mask=0),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.25, p=0.7),
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.Sharpen(alpha=(0.1, 0.3))], p=0.3),
            A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=0, p=0.3),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.4),
        ], seed=config.seed)
    return A.Compose([
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-10, 10), translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), p=0.7,
                 border_mode=0, fill=0, fill_mask=0),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.15, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.03), p=0.3),
    ], seed=config.seed)


def predict_scores(model, data: LabelledImages, batch: int = 8) -> np.ndarray:
    """float32 (N, 2) fusion predictions (benign, malignant) in [0, 1]."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(data), batch):
            breast = torch.from_numpy(data.breast[i:i + batch, None].astype(np.float32))
            out.append(model(torch.from_numpy(data.x[i:i + batch]), breast).fusion_pred.numpy())
    return np.concatenate(out)


def positive_weights(y: np.ndarray) -> np.ndarray:
    """float32 (C,): n_negative / n_positive of each class column of y (N, C) in {0, 1}; 1 where a
    class has no positives."""
    pos = y.sum(0)
    return np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0).astype(np.float32)


def global_saliency(model, x):
    """The global module alone: (N, 2, H/16, W/16) saliency and (N, 2) global prediction."""
    _, levels = model.global_net(x)
    saliency = (levels * model.level_weights.view(1, -1, 1, 1, 1)).sum(1)
    pred = torch_glam.top_t_pool(levels.flatten(0, 1), model.config.top_t_percent).view(levels.shape[:3]).mean(1)
    return saliency, pred


def pretrain_loss(model, x, mask):
    """BCE of each level's malignant saliency (strides 16, 32, 64, all on the stride-16 grid)
    against each cell's lesion fraction. Every level is supervised, not only their weighted sum:
    with the sum alone one level can die (stuck at 0) while the others saturate."""
    import torch.nn.functional as F

    _, levels = model.global_net(x)
    target = F.adaptive_avg_pool2d(mask[:, None], levels.shape[-2:])
    return F.binary_cross_entropy(levels[:, :, 1], target.expand(-1, levels.shape[1], -1, -1))


def validate_pretrain(model, val: LabelledImages, batch: int = 8) -> dict[str, float]:
    import torch.nn.functional as F

    from mammo.metrics import dice_iou

    model.eval()
    dice = []
    with torch.inference_mode():
        for i in range(0, len(val), batch):
            saliency, _ = global_saliency(model, torch.from_numpy(val.x[i:i + batch]))
            up = F.interpolate(saliency[:, 1:2], size=val.x.shape[-2:], mode="bilinear")[:, 0].numpy()
            dice += [dice_iou(p >= 0.5, m > 0)[0] for p, m in zip(up, val.masks[i:i + batch])]
    return {"dice_lesion": float(np.mean(dice)), "score": float(np.mean(dice))}


def init_from_segmenter(model, path: str) -> None:
    """Start both EfficientNet-Lite0 modules of `model` from the encoder of a trained segmenter
    (`glam_encoder_init`): what it learnt from lesion outlines is GLAM's pretraining stage."""
    from mammo.models.torch_glam_effnet import load_segmenter_encoder

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    for part in ("global_net", "local_net"):
        body = getattr(getattr(model, part), "body", None)
        if body is None or not hasattr(body, "conv_stem"):
            raise ValueError(f"glam_encoder_init needs the EfficientNet-Lite0 {part} (glam_*_encoder: efficientnet_lite0)")
        load_segmenter_encoder(body, state)


class GlamTask:
    """What the engine needs to train GLAM (see `training.tasks.Task`)."""

    metric_prefixes = ("auc", "dice", "score")

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.pos_weight: torch.Tensor | None = None

    def load_data(self) -> tuple[LabelledImages, LabelledImages]:
        train, val = load_labelled(self.config, "train"), load_labelled(self.config, "val")
        if self.config.glam_balance:
            self.pos_weight = torch.from_numpy(positive_weights(train.y))
        return train, val

    def build_model(self):
        model = torch_glam.create_model(glam_config(self.config), pretrained=self.config.encoder_weights == "imagenet")
        if self.config.glam_encoder_init:
            init_from_segmenter(model, self.config.glam_encoder_init)
        return model

    def loader(self, train: LabelledImages) -> DataLoader:
        c = self.config
        return DataLoader(AugmentedImages(train, build_augment(c)), batch_size=c.batch_size, shuffle=True,
                          drop_last=len(train) > c.batch_size, num_workers=0)

    def scheme(self, epoch: int) -> str:
        """The loss scheme of this epoch: "joint", or "sep_global" then "sep_local"."""
        if self.config.glam_scheme == "joint":
            return "joint"
        return "sep_global" if epoch < self.config.glam_global_epochs else "sep_local"

    def loss(self, model, batch, epoch: int):
        x, y, mask, breast = batch
        if self.config.dataset == "cdd-cesm" and not self.config.glam_sources:
            return pretrain_loss(model, x, mask)
        scheme = self.scheme(epoch)
        torch_glam.freeze_global(model, scheme == "sep_local")
        total, _ = torch_glam.glam_loss(model(x, breast), y, scheme, self.config.saliency_l1, self.pos_weight)
        return total

    def validate(self, model, val: LabelledImages) -> dict[str, float]:
        """AUC of benign and malignant on the validation images; score = their mean (0.5 when
        undefined). Pretraining: per-image Dice of the malignant global saliency >= 0.5."""
        if val.masks is not None:
            return validate_pretrain(model, val)
        pred = predict_scores(model, val)
        metrics = {}
        for k, name in enumerate(("benign", "malignant")):
            auc = roc_auc(val.y[:, k].astype(int), pred[:, k])
            metrics[f"auc_{name}"] = 0.5 if auc is None else auc
        metrics["score"] = (metrics["auc_benign"] + metrics["auc_malignant"]) / 2
        kinds = sorted(set(val.sources))
        if len(kinds) > 1:
            # Pooled AUC mixes sources of different prevalence; each source is reported apart and
            # "malignant" selection averages them, so no one source's look decides.
            per_source = []
            for kind in kinds:
                rows = np.asarray([s == kind for s in val.sources])
                auc = roc_auc(val.y[rows, 1].astype(int), pred[rows, 1])
                metrics[f"auc_malignant_{kind.replace('-', '_')}"] = 0.5 if auc is None else auc
                per_source.append(0.5 if auc is None else auc)
            if self.config.glam_select == "malignant":
                metrics["score"] = float(np.mean(per_source))
        elif self.config.glam_select == "malignant":
            metrics["score"] = metrics["auc_malignant"]
        return metrics

    def log_images(self, writer, model, data: LabelledImages, epoch: int) -> None:
        """Input | benign map | malignant map for the first few validation images."""
        n = min(self.config.val_overlays, len(data))
        if n == 0:
            return
        model.eval()
        with torch.inference_mode():
            breast = torch.from_numpy(data.breast[:n, None].astype(np.float32))
            maps = torch_glam.segmentation_maps(model(torch.from_numpy(data.x[:n]), breast)).numpy()
        for i in range(n):
            panel = np.concatenate([data.x[i, 0], maps[i, 0], maps[i, 1]], axis=1)
            writer.add_image(f"val/{data.ids[i]}", (panel * 255).astype(np.uint8)[None], epoch)

    def metadata(self) -> dict[str, str]:
        return torch_glam.config_to_metadata(glam_config(self.config))

    def architecture(self) -> str:
        return f"glam/{self.config.glam_scheme}"
