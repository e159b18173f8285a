"""DeepMiCa's two networks (Gerbasi et al., CMPB 2023; github.com/ales-git/DeepMiCa) in PyTorch.

1. A UNet that segments microcalcifications on 256x256 patches of the preprocessed mammogram
   (seed: `Step2_Segmentation/_03_Train/UNet.py`, a from-scratch UNet 64-1024, one logit per pixel).
   Here it is an smp.Unet whose encoder may start from packaged ImageNet weights; the default
   encoder is VGG16 because, like the seed's UNet, its first skip is at full resolution (64
   channels at 256x256): microcalcifications are a few pixels across, and EfficientNet-Lite0's
   finest skip is at stride 2.
2. An ROI classifier, benign (0) / malignant (1) from one logit (seed:
   `Step3_Classification/_03_FeatureExtraction/{Resnet18,Vgg16}.py`: an ImageNet backbone, its
   head replaced by Linear(F, 128|256) -> ReLU -> Dropout(0.5) -> Linear(1); trained first with
   the backbone frozen, then fine-tuned). The seed's ResNet18 has no offline ImageNet weights in
   this project (`mammo.models.pretrained` ships EfficientNet-Lite0 and VGG16 only), so
   "efficientnet-lite0" takes its place: the same role (a small ImageNet network whose pooled
   features feed the head: 1280 features and 3.4 M backbone parameters against ResNet18's 512
   and 11.2 M).

Both take grey input (N, 1, H, W) float32 in [0, 1] and scale it to their encoder's pretrained
range themselves (`GreyNormalise`); the seed fed [0, 1] without ImageNet normalisation, which the
pretrained filters were not trained on. `TorchNet` wraps either for numpy callers (the pipeline)
and computes SHAP maps (`shap.GradientExplainer`) for the classifier.
"""

from __future__ import annotations

import numpy as np

from mammo.models.frameworks import import_smp, import_torch

torch = import_torch()
smp = import_smp()
from torch import nn  # noqa: E402  (after the framework guard)

from mammo.models.pretrained import load_imagenet_encoder  # noqa: E402
from mammo.models.torch_aca_resunet import GreyNormalise  # noqa: E402
from mammo.weights import WeightsEntry  # noqa: E402

ROI_SIZE = 224  # the seed's classifier input (LoadData.py: dim = 224)
BACKBONES = {"efficientnet-lite0": "tu-tf_efficientnet_lite0", "vgg16": "vgg16"}  # name -> pretrained key
HIDDEN = {"efficientnet-lite0": 128, "vgg16": 256}  # the seed's head widths (ResNet18: 128, VGG16: 256)


class PatchUNet(nn.Module):
    """(N, 1, 256, 256) float32 in [0, 1] -> (N, 1, 256, 256) float32 logits of "calcification".

    Any side that is a multiple of 32 works; 256 is what the seed trains and tiles with.
    """

    def __init__(self, encoder: str = "vgg16", pretrained: bool = False) -> None:
        super().__init__()
        self.encoder_name = encoder
        self.normalise = GreyNormalise(encoder)
        self.unet = smp.Unet(encoder, encoder_weights=None, in_channels=1, classes=1)
        if pretrained:
            load_imagenet_encoder(self.unet.encoder, encoder, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(self.normalise(x))


def build_patch_unet(encoder: str = "vgg16", pretrained: bool = False) -> PatchUNet:
    """The patch segmenter. `encoder`: an smp encoder name; `pretrained=True` loads the packaged
    ImageNet weights (vgg16 and tu-tf_efficientnet_lite0 only: KeyError for the others), False
    leaves them random.

    Returns:
        `PatchUNet`: (N, 1, 256, 256) float32 in [0, 1] -> (N, 1, 256, 256) float32 logits.
    """
    return PatchUNet(encoder, pretrained)


class _TimmEfficientNet(nn.Module):
    """timm `tf_efficientnet_lite0` on 1 channel, no classifier: (N, 1, S, S) -> (N, 1280) pooled.

    Held as `.model` so its keys read `model.*`, the layout `load_imagenet_encoder` expects.
    """

    features = 1280

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, in_chans=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Vgg16Features(nn.Module):
    """torchvision VGG16 convs on 1 channel, then the seed's 7x7 average pool and flatten:
    (N, 1, S, S) -> (N, 25088). Held as `.features` (keys `features.N.*`, as packaged)."""

    features_out = 512 * 7 * 7

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.features = torchvision.models.vgg16(weights=None).features
        self.features[0] = nn.Conv2d(1, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class RoiClassifier(nn.Module):
    """(N, 1, S, S) float32 in [0, 1] -> (N, 1) float32 logit of "malignant" (sigmoid: P(malignant)).

    `backbone` and `head` are separate attributes so that training can freeze the backbone
    (the seed's feature-extraction stage) and later unfreeze its last blocks (fine-tuning).
    """

    def __init__(self, backbone: str = "efficientnet-lite0", pretrained: bool = False,
                 input_size: int = ROI_SIZE, dropout: float = 0.5) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}")
        self.backbone_name, self.input_size = backbone, int(input_size)
        key = BACKBONES[backbone]
        self.normalise = GreyNormalise(key)
        if backbone == "vgg16":
            self.backbone: nn.Module = _Vgg16Features()
            width = _Vgg16Features.features_out
        else:
            self.backbone = _TimmEfficientNet()
            width = _TimmEfficientNet.features
        if pretrained:
            load_imagenet_encoder(self.backbone, key, 1)
        hidden = HIDDEN[backbone]
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalise(x)))


def build_roi_classifier(backbone: str = "efficientnet-lite0", pretrained: bool = False,
                         input_size: int = ROI_SIZE) -> RoiClassifier:
    """The ROI classifier; `pretrained=True` loads the packaged ImageNet backbone (the head stays
    random). Input (N, 1, input_size, input_size) float32 in [0, 1]; output (N, 1) logits."""
    return RoiClassifier(backbone, pretrained, input_size)


def _split_architecture(entry: WeightsEntry, kind: str) -> str:
    """"unet/vgg16" -> "vgg16" (kind "unet"); ValueError when the entry is for another network."""
    head, _, name = entry.architecture.partition("/")
    if head != kind or not name:
        raise ValueError(f"weights {entry.name!r}: architecture {entry.architecture!r} "
                         f"is not '{kind}/<name>'")
    return name


def _load_state(module: nn.Module, entry: WeightsEntry) -> nn.Module:
    """Load `entry`'s safetensors (sha256-checked; fp16 becomes fp32) strictly; eval mode."""
    from mammo.models.torch_weights import load_torch_state_dict

    module.load_state_dict({k: v.float() for k, v in load_torch_state_dict(entry).items()}, strict=True)
    return module.eval()


def load_patch_unet(entry: WeightsEntry) -> PatchUNet:
    """The trained segmenter of a manifest entry with architecture "unet/<smp encoder>"."""
    return _load_state(build_patch_unet(_split_architecture(entry, "unet")), entry)


def load_roi_classifier(entry: WeightsEntry) -> RoiClassifier:
    """The trained classifier of a manifest entry with architecture "roi/<backbone>"; its ROI
    side is the entry's `input_size` (square)."""
    h, w = entry.input_size
    if h != w:
        raise ValueError(f"weights {entry.name!r}: ROI input must be square, got {entry.input_size}")
    return _load_state(build_roi_classifier(_split_architecture(entry, "roi"), input_size=h), entry)


class TorchNet:
    """A network for numpy callers: float32 (N, 1, h, w) in [0, 1] -> float32 logits, in eval
    mode and batches of `batch_size` (bounds memory: a film has hundreds of patches).

    Args:
        module: `PatchUNet`, `RoiClassifier` or any module with the same contract.
        batch_size: inputs per forward pass.
        device: torch device name.
        input_size: the square side the network expects (the classifier's ROI side), or None.
    """

    def __init__(self, module: nn.Module, batch_size: int = 8, device: str = "cpu",
                 input_size: int | None = None) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.batch_size = batch_size
        self.input_size = input_size if input_size is not None else getattr(module, "input_size", None)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 1, h, w) in [0, 1], N >= 1 -> float32 logits ((N, 1, h, w) or (N, 1))."""
        if len(x) == 0:
            raise ValueError("no inputs: the caller skips the network when there is nothing to run")
        with torch.inference_mode():
            out = [self.module(self._tensor(x[i:i + self.batch_size])).float().cpu().numpy()
                   for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out)

    def explain(self, x: np.ndarray, background: np.ndarray, nsamples: int = 64, seed: int = 0) -> np.ndarray:
        """SHAP values of the logit (expected gradients, `shap.GradientExplainer`) for a network
        with one output per image.

        Expected gradients average, over `nsamples` random (background image, point on the line
        from it to x) pairs, gradient x (x - background); the map sums, up to sampling noise, to
        logit(x) - mean logit over `background`. Cost: `nsamples` forward + backward passes per image.

        Args:
            x: float32 (N, 1, h, w) in [0, 1], the images to explain.
            background: float32 (B, 1, h, w) in [0, 1], the references (the seed: 100 test ROIs).
            nsamples: samples per image; the noise of the map falls as 1/sqrt(nsamples).
            seed: sampling seed (the same seed gives the same map).

        Returns:
            float32 (N, 1, h, w), in logit units (> 0: pushes towards malignant).
        """
        import shap

        explainer = shap.GradientExplainer(self.module, self._tensor(background), batch_size=self.batch_size)
        values = explainer.shap_values(self._tensor(x), nsamples=nsamples, rseed=seed)
        values = np.asarray(values[0] if isinstance(values, list) else values, np.float32)
        return values.reshape(x.shape)  # one output: shap adds a trailing axis of length 1
