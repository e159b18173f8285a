"""ACA-Atrous-ResUNet and its two siblings (plain UNet, from-scratch ACA-Atrous-UNet).

All three map a batch of grey images (N, C_in, H, W) float32 to logits (N, classes, H, W);
H and W must be multiples of 32. Every submodule is built in `__init__` (the original builds
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


class ACAAtrousResUNet(nn.Module):
    """Encoder (smp ResNet, or `ScratchEncoder`) -> ASPP bottleneck -> 4 UpACA blocks -> 1x1 head.

    Args:
        in_channels: input channels (1 for a grey mammogram; 2 when an image-type plane is added).
        classes: output channels (logits).
        encoder_name: an smp encoder name ("resnet34", "resnet18", ...) or "scratch".
        decoder_channels: output channels of the four decoder blocks, deepest first.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, encoder_name: str = "resnet34",
                 decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 32)):
        super().__init__()
        if encoder_name == "scratch":
            self.encoder = ScratchEncoder(in_channels)
        else:
            self.encoder = smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        ch = list(self.encoder.out_channels)  # e.g. [C_in, 64, 64, 128, 256, 512]
        self.aspp = ASPP(ch[5], ch[4])
        skips = [ch[4], ch[3], ch[2], ch[1]]
        gates = [ch[4]] + list(decoder_channels[:3])
        self.decoder = nn.ModuleList(UpACA(g, s, o) for g, s, o in zip(gates, skips, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        h = self.aspp(feats[5])
        for block, skip in zip(self.decoder, (feats[4], feats[3], feats[2], feats[1])):
            h = block(h, skip)
        return F.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_model(arch: str = "aca_resunet", encoder_name: str = "resnet34", in_channels: int = 1,
                 classes: int = 1) -> nn.Module:
    """Build one of `ARCHITECTURES` with random weights (no download: `encoder_weights=None`).

    "aca_resunet": ResNet encoder + ASPP + ACA decoder; "unet": smp.Unet with the same encoder;
    "aca_unet": the ACA-Atrous decoder on a from-scratch conv encoder (`encoder_name` ignored).
    """
    if arch == "aca_resunet":
        return ACAAtrousResUNet(in_channels, classes, encoder_name)
    if arch == "aca_unet":
        return ACAAtrousResUNet(in_channels, classes, "scratch")
    if arch == "unet":
        return smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes)
    raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
