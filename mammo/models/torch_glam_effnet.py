"""ImageNet-pretrained EfficientNet-Lite0 modules for GLAM (`mammo.models.torch_glam`).

GMIC/GLAM start their local network from an ImageNet ResNet; the packaged ImageNet network here
is EfficientNet-Lite0 (`mammo.models.pretrained`), used for both modules:

- `EffNetGlobal`: the whole-image network. Its last three feature maps (strides 8, 16, 32; 40,
  112, 320 channels) carry the three saliency heads, so the saliency grid is stride 8: twice as
  fine as GLAM's stride 16, which matters at 512x320 where a MIAS mass is 10-40 px across.
- `EffNetLocal`: the patch network, dilated to output stride 16 (timm `output_stride=16`), as
  GLAM keeps its local ResNet at a high resolution.

Both take grey (N, 1, H, W) input in [0, 1], normalised inside as the packaged weights expect,
and sum the first conv over RGB (`adapt_first_conv`). Random weights unless `pretrained`.
"""

from __future__ import annotations

from mammo.models.frameworks import import_smp, import_torch

torch = import_torch()
import_smp()  # timm (with smp) must be loaded before anything imports tensorflow
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ENCODER = "tu-tf_efficientnet_lite0"


def _effnet(out_indices: tuple[int, ...], output_stride: int, pretrained: bool) -> nn.Module:
    import timm

    from mammo.models.pretrained import adapt_first_conv, imagenet_state_dict

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, in_chans=1,
                            out_indices=out_indices, output_stride=output_stride)
    if pretrained:
        state = imagenet_state_dict(ENCODER)
        state["conv_stem.weight"] = adapt_first_conv(state["conv_stem.weight"], 1)
        own = net.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"EfficientNet-Lite0 weights lack {missing[:3]}")
        net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Grey [0, 1] -> the packaged weights' range (mean = std = 0.5)."""
    return (x - 0.5) / 0.5


class EffNetGlobal(nn.Module):
    """EfficientNet-Lite0 on the whole image with three saliency heads (strides 8, 16, 32).

    Returns:
        features: (N, 320, H/32, W/32), the last feature map.
        levels: (N, 3, classes, H/8, W/8) saliency in [0, 1] (each head upsampled to stride 8).
    """

    saliency_stride = 8

    def __init__(self, num_classes: int, pretrained: bool = False):
        super().__init__()
        self.body = _effnet((2, 3, 4), 32, pretrained)
        channels = self.body.feature_info.channels()
        self.out_channels = channels[-1]
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1, bias=False) for c in channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        taps = self.body(_normalise(x))
        size = taps[0].shape[-2:]
        levels = [torch.sigmoid(F.interpolate(head(t), size=size, mode="bilinear", align_corners=False))
                  for head, t in zip(self.heads, taps)]
        return taps[-1], torch.stack(levels, 1)


class EffNetLocal(nn.Module):
    """EfficientNet-Lite0 on each patch, dilated to output stride 16, with a saliency head.

    Returns:
        features: (B, 320), global average pool of the last feature map.
        saliency: (B, classes, ph/16, pw/16) in [0, 1].
    """

    def __init__(self, num_classes: int, pretrained: bool = False):
        super().__init__()
        self.body = _effnet((4,), 16, pretrained)
        self.out_channels = self.body.feature_info.channels()[-1]
        self.saliency_head = nn.Conv2d(self.out_channels, num_classes, 1, bias=False)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.body(_normalise(patches))[-1]
        return fmap.mean((2, 3)), torch.sigmoid(self.saliency_head(fmap))


def load_segmenter_encoder(body: nn.Module, state: dict[str, torch.Tensor], prefix: str = "encoder.model.") -> int:
    """Copy the EfficientNet-Lite0 encoder of a trained segmenter (an smp `tu-tf_efficientnet_lite0`
    state dict, such as the cascade's lesion stage) into a GLAM module's `body`.

    The segmenter's first conv may take extra constant planes (the lesion stage's image-type
    plane); only its grey input channel is kept. Every tensor of `body` must be found.

    Returns:
        the number of tensors copied.
    """
    own = body.state_dict()
    picked = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in own if k not in picked]
    if missing:
        raise ValueError(f"the segmenter's encoder lacks {len(missing)} tensors, e.g. {missing[:3]}")
    picked = {k: picked[k] for k in own}
    picked["conv_stem.weight"] = picked["conv_stem.weight"][:, :1]
    body.load_state_dict(picked, strict=True)
    return len(picked)
