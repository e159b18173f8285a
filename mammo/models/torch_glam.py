"""GLAM: weakly-supervised high-resolution saliency for mammograms (Liu et al., MIDL 2021).

Global-Local Activation Maps, built on GMIC (Shen et al. 2021; nyukat/GLAM, nyukat/GMIC), trained
with image-level labels only (benign, malignant), written after the papers (no code copied):

1. Global module (`GlobalNetwork`): GMIC's ResNet-22 on the whole image; as in GLAM, a 1x1 conv +
   sigmoid on the stride-16, -32 and -64 features gives three saliency levels on the stride-16
   grid. Or (`global_encoder="efficientnet_lite0"`, `mammo.models.torch_glam_effnet`) the
   ImageNet-pretrained EfficientNet-Lite0 with heads at strides 8, 16, 32 on the stride-8 grid.
   Global prediction: mean over the levels of top-t% pooling. The global saliency map is
   their weighted mean, weights `saliency_level_weights` (GLAM: 0.2, 0.6, 0.2).
2. Patch selection (`select_patches`): greedy, K times, on the global saliency (classes min-max
   normalised, summed; window mean by average pooling; picked window zeroed), among windows
   that are at least 55% breast when a breast mask is given. No gradient.
3. Local module (`LocalNetwork`, or the pretrained `EffNetLocal`): ResNet-18 on each of the K
   crops, high-resolution as GLAM's (output stride `local_stride`); a 1x1 conv + sigmoid gives
   the patch saliency, pooled by top-t% over all K patches into the patch prediction (GLAM's
   local prediction).
4. Gated-attention MIL over the K patch features -> local prediction (GMIC).
5. Fusion: concat(max-pooled global feature, attended local feature) -> linear -> sigmoid.

`segmentation_maps`: the pixel-level map: the global saliency upsampled to the input, blended
with each patch's saliency under a feathered window (continuous across patch edges); GLAM's
own (global + pasted patch map) / 2 and "inside_mean" are kept as modes.
Input: float32 (N, in_channels, H, W), H and W multiples of 32; every output probability is in
[0, 1]. All submodules are built in `__init__`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from mammo.models.frameworks import import_torch

torch = import_torch()
import torch.nn.functional as F
from torch import nn

from mammo.models.torch_glam_effnet import EffNetGlobal, EffNetLocal
from mammo.models.torch_glam_parts import (
    LOCAL_STRIDES,
    GatedAttention,
    GlobalNetwork,
    LocalNetwork,
    crop_patches,
    paste_patch_maps,
    select_patches,
    top_t_pool,
)

ARCH = "glam"
SCHEMES = ("joint", "sep_global", "sep_local")
PIXEL_MAP_MODES = ("feathered", "glam", "inside_mean")
INPUT_MODES = ("plain", "breast_only")
GLOBAL_ENCODERS = ("resnet22", "efficientnet_lite0")
LOCAL_ENCODERS = ("resnet18", "efficientnet_lite0")
METADATA_PREFIX = "glam."


@dataclass
class GlamConfig:
    """The recipe of a GLAM network (data only; `check_config` validates it).

    The authors work at 2944 x 1920 with 256 x 256 patches (GMIC, K = 6) or one 512 x 512 patch
    (GLAM's released models); scale `patch_size` with the input (96 px at 512 x 320 is GLAM's
    patch/image ratio).
    """

    input_size: tuple[int, int] = (512, 320)      # (h, w) training size; any multiple of 32 runs
    in_channels: int = 1
    num_classes: int = 2                          # (benign, malignant)
    global_width: int = 16                        # ResNet-22 base width (GMIC: 16 -> 256 features)
    global_blocks: tuple[int, ...] = (2, 2, 2, 2, 2)  # residual blocks per stage (five stages)
    saliency_level_weights: tuple[float, float, float] = (0.2, 0.6, 0.2)  # strides 16, 32, 64
    top_t_percent: float = 0.03                   # fraction pooled per global map (GLAM 0.03, GMIC 0.02-0.1)
    num_patches: int = 6                          # K (GMIC: 6)
    patch_size: tuple[int, int] = (96, 96)        # (ph, pw) in input pixels
    local_stride: int = 4                         # output stride of the local ResNet-18 (GLAM: 4)
    local_stages: int = 4                         # 4: ResNet-18; 3: without its last stage (1/4 the size)
    patch_top_t: float = 0.3                      # fraction pooled over the K patch maps (GLAM 0.3)
    attention_dim: int = 128                      # gated-attention hidden size (GMIC: 128)
    saliency_nonlinearity: str = "sigmoid"
    pixel_map_mode: str = "feathered"             # see `segmentation_maps`
    global_encoder: str = "resnet22"              # or "efficientnet_lite0" (ImageNet, stride-8 saliency)
    local_encoder: str = "resnet18"               # or "efficientnet_lite0" (ImageNet, output stride 16)
    input_mode: str = "plain"                     # "plain" or "breast_only" (see mammo.pipelines.glam.prepare_input)


def check_config(c: GlamConfig) -> None:
    """Raise ValueError when `c` cannot build a working network."""
    problems = []
    if len(c.input_size) != 2 or any(s <= 0 or s % 32 for s in c.input_size):
        problems.append(f"input_size must be (h, w), positive multiples of 32, got {c.input_size}")
    if len(c.patch_size) != 2 or any(not 0 < p <= s for p, s in zip(c.patch_size, c.input_size)):
        problems.append(f"patch_size {c.patch_size} must be positive and fit in input_size {c.input_size}")
    if len(c.global_blocks) != 5 or min(c.global_blocks) < 1:
        problems.append(f"global_blocks must list five stages of >= 1 block, got {c.global_blocks}")
    weights = c.saliency_level_weights
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        problems.append(f"saliency_level_weights must be three weights >= 0 (not all 0), got {weights}")
    for name in ("top_t_percent", "patch_top_t"):
        if not 0 < getattr(c, name) <= 1:
            problems.append(f"{name} is a fraction in (0, 1], got {getattr(c, name)}")
    for name in ("in_channels", "num_classes", "global_width", "num_patches", "attention_dim"):
        if getattr(c, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.local_stride not in LOCAL_STRIDES:
        problems.append(f"local_stride must be one of {LOCAL_STRIDES}, got {c.local_stride}")
    if c.saliency_nonlinearity != "sigmoid":
        problems.append(f"saliency_nonlinearity must be 'sigmoid', got {c.saliency_nonlinearity!r}")
    if c.global_encoder not in GLOBAL_ENCODERS:
        problems.append(f"global_encoder must be one of {GLOBAL_ENCODERS}, got {c.global_encoder!r}")
    if c.local_encoder not in LOCAL_ENCODERS:
        problems.append(f"local_encoder must be one of {LOCAL_ENCODERS}, got {c.local_encoder!r}")
    if c.pixel_map_mode not in PIXEL_MAP_MODES:
        problems.append(f"pixel_map_mode must be one of {PIXEL_MAP_MODES}, got {c.pixel_map_mode!r}")
    if c.input_mode not in INPUT_MODES:
        problems.append(f"input_mode must be one of {INPUT_MODES}, got {c.input_mode!r}")
    if problems:
        raise ValueError("invalid GlamConfig: " + "; ".join(problems))


@dataclass
class GlamOutput:
    """What `GlamModel.forward` returns (N images, K patches, C classes; float32 unless said).

    global_pred, local_pred, patch_pred, fusion_pred: (N, C) in [0, 1] (fusion_pred is the
    model's answer). saliency: (N, C, H/s, W/s) global map in [0, 1], s = 16 (ResNet-22) or 8
    (EfficientNet-Lite0). saliency_levels: (N, 3, C, H/s, W/s), the three heads.
    patch_locations: int64 (N, K, 2) (top, left) in input pixels. patches: (N, K, in_channels, ph, pw) crops of the input. patch_saliency:
    (N, K, C, ph/s, pw/s) in [0, 1]. attention: (N, K), sums to 1 over K.
    """

    global_pred: torch.Tensor
    local_pred: torch.Tensor
    patch_pred: torch.Tensor
    fusion_pred: torch.Tensor
    saliency: torch.Tensor
    saliency_levels: torch.Tensor
    patch_locations: torch.Tensor
    patches: torch.Tensor
    patch_saliency: torch.Tensor
    attention: torch.Tensor
    input_size: tuple[int, int] = (0, 0)
    patch_size: tuple[int, int] = (0, 0)
    pixel_map_mode: str = "glam"


class GlamModel(nn.Module):
    """GLAM (see the module docstring). `forward(x)`: float32 (N, in_channels, H, W) -> `GlamOutput`."""

    def __init__(self, config: GlamConfig, pretrained: bool = False):
        super().__init__()
        check_config(config)
        self.config = config
        c = config
        if "efficientnet_lite0" in (c.global_encoder, c.local_encoder) and c.in_channels != 1:
            raise ValueError("the EfficientNet-Lite0 modules take grey (1-channel) input")
        if c.global_encoder == "efficientnet_lite0":
            self.global_net = EffNetGlobal(c.num_classes, pretrained)
        else:
            self.global_net = GlobalNetwork(c.in_channels, c.global_width, tuple(c.global_blocks),
                                            c.num_classes)
        if c.local_encoder == "efficientnet_lite0":
            self.local_net = EffNetLocal(c.num_classes, pretrained)
        else:
            self.local_net = LocalNetwork(c.in_channels, c.num_classes, c.local_stride, c.local_stages)
        self.attention = GatedAttention(self.local_net.out_channels, c.attention_dim, c.num_classes)
        self.fusion = nn.Linear(self.global_net.out_channels + self.local_net.out_channels, c.num_classes)
        weights = torch.tensor(c.saliency_level_weights, dtype=torch.float32)
        self.register_buffer("level_weights", weights / weights.sum(), persistent=False)
        self.global_frozen = False

    def train(self, mode: bool = True) -> GlamModel:
        """As `nn.Module.train`, but a frozen global module stays in eval mode (its BN statistics too)."""
        super().train(mode)
        if self.global_frozen:
            self.global_net.eval()
        return self

    def forward(self, x: torch.Tensor, breast: torch.Tensor | None = None) -> GlamOutput:
        """x: (N, in_channels, H, W); breast: optional (N, 1, H, W) mask that patches must lie in
        (at least 55% of each patch; see `select_patches`)."""
        c = self.config
        h, w = x.shape[-2:]
        if x.ndim != 4 or x.shape[1] != c.in_channels or h % 32 or w % 32:
            raise ValueError(f"expected (N, {c.in_channels}, H, W), H and W multiples of 32, "
                             f"got {tuple(x.shape)}")
        if c.patch_size[0] > h or c.patch_size[1] > w:
            raise ValueError(f"patch_size {c.patch_size} does not fit in the input {(h, w)}")
        features, levels = self.global_net(x)
        saliency = (levels * self.level_weights.view(1, -1, 1, 1, 1)).sum(1)
        global_pred = top_t_pool(levels.flatten(0, 1), c.top_t_percent).view(levels.shape[:3]).mean(1)

        points = select_patches(saliency, (h, w), tuple(c.patch_size), c.num_patches, breast)
        patches = crop_patches(x, points, tuple(c.patch_size))
        n, k = points.shape[:2]
        patch_features, patch_saliency = self.local_net(patches.flatten(0, 1))
        patch_features = patch_features.view(n, k, -1)
        patch_saliency = patch_saliency.view((n, k) + patch_saliency.shape[1:])
        patch_pred = top_t_pool(patch_saliency.transpose(1, 2), c.patch_top_t)
        z, attention, local_pred = self.attention(patch_features)

        global_vector = features.amax((2, 3))
        fusion_pred = torch.sigmoid(self.fusion(torch.cat([global_vector, z], 1)))
        return GlamOutput(global_pred, local_pred, patch_pred, fusion_pred, saliency, levels, points, patches,
                          patch_saliency, attention, (int(h), int(w)), tuple(c.patch_size), c.pixel_map_mode)


def segmentation_maps(outputs: GlamOutput, mode: str | None = None) -> torch.Tensor:
    """Pixel-level saliency (N, C, H, W) float32 in [0, 1], at the input's resolution.

    G = global saliency upsampled (bilinear) to (H, W); L = each patch's saliency upsampled to the
    patch size and pasted at its location (maximum where patches overlap), 0 outside the patches.
    "feathered" (the default): (1 - w) G + w (G + L) / 2, w = the patch's raised-cosine weight
    (`feather`: 1 in the middle, 0 at its edges), so the map is continuous across patch edges.
    "glam" (GLAM's code, `saliency_map = (local + global) / 2`): (G + L) / 2 everywhere, so G / 2
    outside the patches: a step at every patch edge, where a thresholded mask starts or stops.
    "inside_mean": (G + L) / 2 under the patches, G elsewhere (also a step where L differs from G).
    `mode` defaults to the model's `pixel_map_mode`.
    """
    mode = mode or outputs.pixel_map_mode
    if mode not in PIXEL_MAP_MODES:
        raise ValueError(f"mode must be one of {PIXEL_MAP_MODES}, got {mode!r}")
    size = tuple(outputs.input_size)
    g = F.interpolate(outputs.saliency, size=size, mode="bilinear", align_corners=False)
    local, covered, weight = paste_patch_maps(outputs.patch_saliency, outputs.patch_locations,
                                              tuple(outputs.patch_size), size)
    mixed = (g + local) / 2
    if mode == "feathered":
        return ((1 - weight) * g + weight * mixed).clamp(0, 1)
    return (mixed if mode == "glam" else torch.where(covered, mixed, g)).clamp(0, 1)


def glam_loss(outputs: GlamOutput, targets: torch.Tensor, scheme: str = "joint", l1_weight: float = 0.0,
              pos_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss of one batch. targets: float (N, C) in {0, 1} (benign, malignant);
    pos_weight: optional (C,) weight of each class's positive terms (class balancing).

    Terms: BCE of global_pred ("global"), local_pred ("local"), patch_pred ("patch": trains the
    patch saliency, GLAM's local loss), fusion_pred ("fusion"); "l1" = l1_weight * mean of the
    global saliency (GMIC's sparsity term). "joint": all; "sep_global" (the global module alone):
    global + l1; "sep_local" (use with `freeze_global(model, True)`): local + patch + fusion.

    Returns:
        total: scalar tensor (with gradient); parts: {term: float}, summing to total.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    y = targets.to(outputs.fusion_pred.dtype)
    weight = None if pos_weight is None else 1 + (pos_weight.to(y).view(1, -1) - 1) * y
    terms: dict[str, torch.Tensor] = {}
    if scheme in ("joint", "sep_global"):
        terms["global"] = F.binary_cross_entropy(outputs.global_pred, y, weight=weight)
        terms["l1"] = l1_weight * outputs.saliency.abs().mean()
    if scheme in ("joint", "sep_local"):
        for name in ("local", "patch", "fusion"):
            terms[name] = F.binary_cross_entropy(getattr(outputs, f"{name}_pred"), y, weight=weight)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: float(value.detach()) for name, value in terms.items()}


def freeze_global(model: GlamModel, frozen: bool) -> None:
    """Freeze (no gradient, BN statistics fixed: eval mode) or release the global module.

    The fusion layer, the local module and the attention stay trainable ("sep_local").
    """
    model.global_frozen = frozen
    for p in model.global_net.parameters():
        p.requires_grad_(not frozen)
    model.global_net.train(model.training and not frozen)


def _coerce(config: dict[str, object]) -> GlamConfig:
    """GlamConfig from a plain dict (lists become tuples); unknown keys raise TypeError."""
    defaults = GlamConfig()
    values = {k: tuple(v) if isinstance(getattr(defaults, k, None), tuple) else v for k, v in config.items()}
    return GlamConfig(**values)


def create_model(config: GlamConfig | dict[str, object] | None = None, pretrained: bool = False) -> GlamModel:
    """Build GLAM (nothing downloaded). A dict holds GlamConfig fields. `pretrained`: the
    EfficientNet-Lite0 modules start from the packaged ImageNet weights (`mammo.models.pretrained`);
    the ResNet modules have none and always start from random weights."""
    if config is None:
        config = GlamConfig()
    elif isinstance(config, dict):
        config = _coerce(config)
    return GlamModel(config, pretrained)


def config_to_metadata(config: GlamConfig) -> dict[str, str]:
    """Safetensors metadata (str -> str): {"arch": "glam", "glam.<field>": JSON value, ...}."""
    meta = {"arch": ARCH}
    for f in dataclasses.fields(config):
        meta[METADATA_PREFIX + f.name] = json.dumps(getattr(config, f.name))
    return meta


def config_from_metadata(meta: dict[str, str]) -> GlamConfig:
    """Inverse of `config_to_metadata`; other keys are ignored, fields not stored take their default.

    Raises:
        ValueError: `meta` is not a GLAM recipe (arch is not "glam") or holds an invalid config.
    """
    if meta.get("arch") != ARCH:
        raise ValueError(f"metadata arch is {meta.get('arch')!r}, not {ARCH!r}: not a GLAM recipe")
    names = {f.name for f in dataclasses.fields(GlamConfig)}
    values = {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in meta.items()
              if k.startswith(METADATA_PREFIX) and k[len(METADATA_PREFIX):] in names}
    config = _coerce(values)
    check_config(config)
    return config
