"""ACA-Atrous-ResUNet and its two siblings (plain UNet, from-scratch ACA-Atrous-UNet).

All three map a batch of grey images (N, C_in, H, W) float32 to logits (N, classes, H, W);
plane 0 is the grey image in [0, 1], further planes are constant conditioning planes in [0, 1].
H and W must be multiples of 32. The network scales plane 0 to its encoder's pretrained input
range itself (`mammo.models.pretrained.grey_normalisation`), so callers never normalise. Every submodule is built in `__init__` (the original builds
some lazily on the first forward, which hides parameters from optimisers and breaks loading).
"""

from __future__ import annotations

from mammo.models.frameworks import import_smp, import_torch

torch = import_torch()
smp = import_smp()
import torch.nn.functional as F  # noqa: E402  (after the framework guard)
from torch import nn  # noqa: E402

ARCHITECTURES = ("aca_resunet", "unet", "aca_unet")


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Parallel 3x3 convolutions at several dilation rates -> concat -> BN+ReLU -> 1x1 projection."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (1, 6, 12, 18), branch: int = 64):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, branch, 3, padding=r, dilation=r, bias=False) for r in rates)
        self.post = nn.Sequential(nn.BatchNorm2d(branch * len(rates)), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(branch * len(rates), cout, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.post(torch.cat([b(x) for b in self.branches], dim=1)))


class ACA(nn.Module):
    """Attention on the encoder skip, steered by the decoder gate (same spatial size).

    Channel attention over concat(skip, gate) (pool -> reduce -> ReLU -> expand -> sigmoid) and
    spatial attention (3x3 conv -> sigmoid); `refined = skip * ca * sa + skip`.
    """

    def __init__(self, skip_ch: int, gate_ch: int, reduction: int = 8):
        super().__init__()
        both = skip_ch + gate_ch
        hidden = max(8, both // reduction)
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(both, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, skip_ch, 1), nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(both, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        both = torch.cat([skip, gate], dim=1)
        return skip * self.channel(both) * self.spatial(both) + skip


class UpACA(nn.Module):
    """Upsample the gate x2, refine the skip with `ACA`, fuse (1x1), then a double 3x3 conv."""

    def __init__(self, gate_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.aca = ACA(skip_ch, gate_ch)
        self.fuse = conv_bn_relu(skip_ch + gate_ch, out_ch, k=1)
        self.convs = nn.Sequential(conv_bn_relu(out_ch, out_ch), conv_bn_relu(out_ch, out_ch))

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gate = F.interpolate(gate, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        refined = self.aca(skip, gate)
        return self.convs(self.fuse(torch.cat([refined, gate], dim=1)))


class ScratchEncoder(nn.Module):
    """A plain conv encoder (double 3x3 conv + max-pool per stage) with smp's `out_channels` API."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128, 256, 512)):
        super().__init__()
        self.out_channels = (in_channels,) + widths
        stages, cin = [], in_channels
        for i, w in enumerate(widths):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            stages.append(nn.Sequential(*pool, conv_bn_relu(cin, w), conv_bn_relu(w, w)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.first_stride2 = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [x], self.first_stride2(x)  # strides 1, 2, 4, 8, 16, 32 like a ResNet encoder
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class GreyNormalise(nn.Module):
    """Scales plane 0 of (N, C, H, W) to `(x * scale - mean) / std`; other planes pass unchanged.

    The constants are not saved in state dicts (they follow from the encoder name), so weights
    trained before this layer existed (identity for from-scratch encoders) load unchanged.
    """

    def __init__(self, encoder_name: str):
        super().__init__()
        from mammo.models.pretrained import grey_normalisation

        self.scale, self.mean, self.std = grey_normalisation(encoder_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.scale, self.mean, self.std) == (1.0, 0.0, 1.0):
            return x
        return torch.cat([(x[:, :1] * self.scale - self.mean) / self.std, x[:, 1:]], dim=1)


class ACAAtrousResUNet(nn.Module):
    """Encoder (any smp encoder of depth 5, or `ScratchEncoder`) -> ASPP bottleneck -> 4 UpACA
    blocks -> 1x1 head. The seed's ASPP and ACA decoder are kept; the encoder is a parameter.

    Args:
        in_channels: input channels (1 for a grey mammogram; 2 when an image-type plane is added).
        classes: output channels (logits).
        encoder_name: an smp encoder name ("resnet34", "tu-tf_efficientnet_lite0", "vgg16", ...)
            or "scratch".
        encoder_weights: "imagenet" loads the packaged ImageNet weights
            (`mammo.models.pretrained`; never a download); None: random initialisation.
        decoder_channels: output channels of the four decoder blocks, deepest first.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, encoder_name: str = "resnet34",
                 decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 32),
                 encoder_weights: str | None = None):
        super().__init__()
        self.normalise = GreyNormalise(encoder_name)
        if encoder_name == "scratch":
            self.encoder = ScratchEncoder(in_channels)
        else:
            self.encoder = smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        if encoder_weights == "imagenet":
            from mammo.models.pretrained import load_imagenet_encoder

            load_imagenet_encoder(self.encoder, encoder_name, in_channels)
        elif encoder_weights is not None:
            raise ValueError(f"encoder_weights must be 'imagenet' or None, not {encoder_weights!r}")
        ch = list(self.encoder.out_channels)  # e.g. [C_in, 64, 64, 128, 256, 512]
        self.aspp = ASPP(ch[5], ch[4])
        skips = [ch[4], ch[3], ch[2], ch[1]]
        gates = [ch[4]] + list(decoder_channels[:3])
        self.decoder = nn.ModuleList(UpACA(g, s, o) for g, s, o in zip(gates, skips, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(self.normalise(x))
        h = self.aspp(feats[5])
        for block, skip in zip(self.decoder, (feats[4], feats[3], feats[2], feats[1])):
            h = block(h, skip)
        return F.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_model(arch: str = "aca_resunet", encoder_name: str = "resnet34", in_channels: int = 1,
                 classes: int = 1, encoder_weights: str | None = None) -> nn.Module:
    """Build one of `ARCHITECTURES`. Nothing is downloaded: `encoder_weights="imagenet"` takes the
    packaged weights of `mammo.models.pretrained` (aca_resunet only), None leaves them random.

    "aca_resunet": smp encoder + ASPP + ACA decoder; "unet": smp.Unet with the same encoder;
    "aca_unet": the ACA-Atrous decoder on a from-scratch conv encoder (`encoder_name` ignored).
    """
    if arch == "aca_resunet":
        return ACAAtrousResUNet(in_channels, classes, encoder_name, encoder_weights=encoder_weights)
    if encoder_weights is not None:
        raise ValueError(f"encoder_weights={encoder_weights!r} is supported for aca_resunet only")
    if arch == "aca_unet":
        return ACAAtrousResUNet(in_channels, classes, "scratch")
    if arch == "unet":
        return smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes)
    raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
