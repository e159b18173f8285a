"""Building blocks of GLAM (`mammo.models.torch_glam`).

The global ResNet-22 with its three saliency heads, top-t% pooling, the greedy patch selection,
cropping and pasting of patches, the high-resolution local ResNet-18 and gated-attention MIL.
Written after the authors' descriptions and public code (nyukat/GMIC, nyukat/GLAM), not copied.
Shapes are (N, C, H, W); every tensor is float32 unless said otherwise.
"""

from __future__ import annotations

from mammo.models.frameworks import import_torch

torch = import_torch()
import torch.nn.functional as F  # noqa: E402  (after the framework guard)
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

SALIENCY_STRIDES = (16, 32, 64)  # input pixels per cell of the three global saliency levels
LOCAL_STRIDES = (4, 8, 16, 32)   # allowed output strides of the local network


class PreActBlock(nn.Module):
    """Pre-activation basic block (ResNet v2): BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut.

    As in GMIC's ResNet-22, the first block of every stage projects the shortcut with a 1x1 conv
    (no BN) applied to the pre-activated input.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, project: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(h)
        return self.conv2(F.relu(self.bn2(self.conv1(h)))) + skip


class GlobalNetwork(nn.Module):
    """GMIC's ResNet-22 on the whole image, with GLAM's saliency heads at three scales.

    Stem: conv 7x7 stride 2 + max-pool 3x3 stride 2; five stages of `PreActBlock`s with widths
    w, 2w, 4w, 8w, 16w and strides 1, 2, 2, 2, 2 (output stride 64); final BN + ReLU. A bias-free
    1x1 conv maps each of the last three stage outputs (strides 16, 32, 64) to one map per class;
    each is upsampled (bilinear) to the stride-16 grid and squashed with a sigmoid.

    Returns:
        features: (N, 16w, ceil(H/64), ceil(W/64)), the last feature map (after BN + ReLU).
        levels: (N, 3, classes, ceil(H/16), ceil(W/16)) saliency in [0, 1], strides 16, 32, 64.
    """

    def __init__(self, in_channels: int, width: int, blocks: tuple[int, ...], num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout, stride = width * 2 ** i, (1 if i == 0 else 2)
            stages.append(nn.Sequential(*(PreActBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1,
                                                      project=b == 0) for b in range(n))))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.out_channels = cin
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1, bias=False)
                                   for c in (cin // 4, cin // 2, cin))
        for m in self.modules():  # GLAM's ResNetV2 initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, taps = self.stem(x), []
        for stage in self.stages:
            h = stage(h)
            taps.append(h)
        features = self.final(h)
        size = taps[-3].shape[-2:]
        levels = [torch.sigmoid(F.interpolate(head(t), size=size, mode="bilinear", align_corners=False))
                  for head, t in zip(self.heads, (taps[-3], taps[-2], features))]
        return features, torch.stack(levels, 1)


def top_t_pool(maps: torch.Tensor, t: float) -> torch.Tensor:
    """Mean of the largest fraction `t` of the values of each (n, c) map.

    Args:
        maps: (N, C, ...) float; every trailing dimension is pooled together.
        t: fraction in (0, 1]; at least one value is kept.
    Returns:
        (N, C), in the range of `maps`.
    """
    flat = maps.flatten(2)
    k = max(1, int(round(flat.shape[-1] * t)))
    return flat.topk(k, dim=-1).values.mean(-1)


def window_on_map(map_hw: tuple[int, int], input_hw: tuple[int, int],
                  patch_hw: tuple[int, int]) -> tuple[int, int]:
    """The patch size in saliency-map cells (GMIC: round(patch * map / input), at least 1 cell)."""
    return tuple(min(m, max(1, int(round(p * m / i)))) for m, i, p in zip(map_hw, input_hw, patch_hw))


def cells_to_pixels(cells: torch.Tensor, big: int, small: int, patch: int) -> torch.Tensor:
    """Map-cell indices along one axis -> patch corners in input pixels: round(cell * big / small),
    clamped so that a patch of `patch` pixels lies inside the `big`-pixel axis (int64)."""
    return torch.round(cells.double() * big / small).long().clamp(0, big - patch)


def window_coverage(mask: torch.Tensor, positions: tuple[int, int], map_hw: tuple[int, int],
                    patch_hw: tuple[int, int]) -> torch.Tensor:
    """Fraction of `mask` under the patch each map cell would place, measured in input pixels.

    Cell (i, j) puts its patch where `cells_to_pixels` says, as in `select_patches`, so the rule
    holds for the patch actually cut.

    Args:
        mask: (N, 1, H, W) bool or float in [0, 1].
        positions: (rows, cols) of candidate cells; map_hw: (h, w) of the map; patch_hw: (ph, pw).
    Returns:
        (N, 1, rows, cols) float in [0, 1].
    """
    n, _, big_h, big_w = mask.shape
    ph, pw = patch_hw
    integral = F.pad(mask.float().cumsum(-1).cumsum(-2), (1, 0, 1, 0))[:, 0]  # (N, H+1, W+1)
    tops = cells_to_pixels(torch.arange(positions[0]), big_h, map_hw[0], ph)
    lefts = cells_to_pixels(torch.arange(positions[1]), big_w, map_hw[1], pw)
    t, l = tops.view(-1, 1).to(mask.device), lefts.view(1, -1).to(mask.device)
    area = (integral[:, t + ph, l + pw] - integral[:, t, l + pw] - integral[:, t + ph, l] + integral[:, t, l])
    return (area / (ph * pw)).unsqueeze(1)


@torch.no_grad()
def select_patches(saliency: torch.Tensor, input_hw: tuple[int, int], patch_hw: tuple[int, int],
                   k: int, breast: torch.Tensor | None = None, min_breast: float = 0.55) -> torch.Tensor:
    """GMIC/GLAM's greedy patch selection (discrete: no gradient), kept inside the breast.

    Each class map is min-max normalised to [0, 1] and the classes are summed. K times: the
    patch-sized window (in map cells) with the largest mean (average pooling, stride 1) is picked
    and that window is set to 0 on the map. Map cells are converted to input pixels
    (round(cell * input / map)) and clamped so that the patch lies inside the image.

    With `breast`, a window is a candidate only when at least `min_breast` of it is breast (a
    window in the black background or on a film label can score high on an untrained or
    confused map, but it is never what a reader wants to see); when no window qualifies, the
    one with the most breast is taken. 0.55 rather than 0.5 leaves room for the resampling back
    to the original image, where "at least half breast" is checked.

    Args:
        saliency: (N, C, h, w) float, any range.
        input_hw: (H, W) of the image the patches are cut from.
        patch_hw: (ph, pw) patch size in input pixels, ph <= H, pw <= W.
        k: number of patches.
        breast: optional (N, 1, H, W) breast mask (bool or float in [0, 1]) at input resolution.
    Returns:
        int64 (N, K, 2): (top, left) corner of each patch in input pixels, in picking order.
    """
    n, c, h, w = saliency.shape
    (big_h, big_w), (ph, pw) = input_hw, patch_hw
    wh, ww = window_on_map((h, w), input_hw, patch_hw)
    flat = saliency.detach().float().reshape(n, c, -1)
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    current = ((flat - low) / (high - low).clamp_min(1e-12)).sum(1).reshape(n, 1, h, w)
    allowed = None
    if breast is not None:
        cover = window_coverage(breast, (h - wh + 1, w - ww + 1), (h, w), patch_hw)
        best = cover.flatten(1).amax(1).view(n, 1, 1, 1)
        allowed = (cover >= min_breast) | (cover >= best - 1e-6)
    rows = torch.arange(h, device=saliency.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=saliency.device).view(1, 1, 1, w)
    cells = []
    for _ in range(k):
        pooled = F.avg_pool2d(current, (wh, ww), stride=1)
        if allowed is not None:
            pooled = pooled.masked_fill(~allowed, -1.0)  # below any mean of the [0, C] map
        idx = pooled.flatten(1).argmax(1)
        i, j = (idx // pooled.shape[-1]).view(n, 1, 1, 1), (idx % pooled.shape[-1]).view(n, 1, 1, 1)
        cells.append(torch.cat([i.view(n, 1), j.view(n, 1)], 1))
        inside = (rows >= i) & (rows < i + wh) & (cols >= j) & (cols < j + ww)
        current = current.masked_fill(inside, 0.0)
    cells = torch.stack(cells, 1)
    return torch.stack([cells_to_pixels(cells[..., 0], big_h, h, ph),
                        cells_to_pixels(cells[..., 1], big_w, w, pw)], -1)


def crop_patches(x: torch.Tensor, points: torch.Tensor, patch_hw: tuple[int, int]) -> torch.Tensor:
    """Cut the patches: x (N, C, H, W), points int (N, K, 2) -> (N, K, C, ph, pw), same dtype as x."""
    ph, pw = patch_hw
    pts = points.tolist()
    return torch.stack([torch.stack([x[i, :, t:t + ph, l:l + pw] for t, l in row])
                        for i, row in enumerate(pts)])


def feather(patch_hw: tuple[int, int], border: float = 0.25) -> torch.Tensor:
    """(ph, pw) weights in [0, 1]: 1 in the middle, a raised-cosine ramp to 0 over the outer
    `border` fraction of each side (the product of the row and column ramps)."""
    def ramp(n: int) -> torch.Tensor:
        width = max(1, int(round(n * border)))
        pos = torch.arange(n, dtype=torch.float32)
        edge = torch.minimum(pos + 0.5, n - pos - 0.5) / width
        return 0.5 - 0.5 * torch.cos(torch.pi * edge.clamp(0, 1))

    return ramp(patch_hw[0])[:, None] * ramp(patch_hw[1])[None, :]


def paste_patch_maps(maps: torch.Tensor, points: torch.Tensor, patch_hw: tuple[int, int],
                     out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upsample patch maps to the patch size (bilinear) and paste them at their positions.

    Args:
        maps: (N, K, C, h', w') float in [0, 1].
        points: int (N, K, 2) (top, left) in output pixels.
    Returns:
        canvas: (N, C, H, W), 0 where no patch lies, the maximum where patches overlap.
        covered: bool (N, 1, H, W), True under at least one patch.
        weight: (N, 1, H, W) in [0, 1], the largest `feather` weight of the patches over each
            pixel (0 at every patch's edge and outside the patches).
    """
    n, k, c = maps.shape[:3]
    ph, pw = patch_hw
    up = F.interpolate(maps.flatten(0, 1), size=(ph, pw), mode="bilinear", align_corners=False)
    up = up.view(n, k, c, ph, pw)
    ramp = feather(patch_hw).to(maps)
    canvas = maps.new_zeros((n, c) + tuple(out_hw))
    weight = maps.new_zeros((n, 1) + tuple(out_hw))
    covered = torch.zeros((n, 1) + tuple(out_hw), dtype=torch.bool, device=maps.device)
    for i, row in enumerate(points.tolist()):
        for j, (t, l) in enumerate(row):
            region = canvas[i, :, t:t + ph, l:l + pw]
            canvas[i, :, t:t + ph, l:l + pw] = torch.maximum(region, up[i, j])
            weight[i, :, t:t + ph, l:l + pw] = torch.maximum(weight[i, :, t:t + ph, l:l + pw], ramp)
            covered[i, :, t:t + ph, l:l + pw] = True
    return canvas, covered, weight


class LocalNetwork(nn.Module):
    """torchvision ResNet-18 (random weights) on each patch, made high-resolution like GLAM's.

    GLAM's local network keeps stride 1 in all residual stages (output stride 4) so that the patch
    saliency is fine-grained; `output_stride` (4, 8, 16 or 32) keeps the stride of only the first
    log2(output_stride / 4) of stages 2-4 (32 = the stock ResNet-18). `stages` = 3 drops the last
    residual stage (256 features instead of 512, 2.8 M instead of 11.2 M parameters: what makes two
    GLAM weight files fit the repository's size budget). The first conv takes `in_channels` planes.
    A bias-free 1x1 conv + sigmoid on the last feature map gives the patch saliency.

    Returns:
        features: (B, out_channels), global average pool of the last feature map.
        saliency: (B, classes, ceil(ph / s), ceil(pw / s)) in [0, 1].
    """

    def __init__(self, in_channels: int, num_classes: int, output_stride: int = 4, stages: int = 4):
        super().__init__()
        if stages not in (3, 4):
            raise ValueError(f"stages must be 3 or 4, got {stages}")
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        strided = [net.layer2, net.layer3, net.layer4][:stages - 1]
        keep = LOCAL_STRIDES.index(output_stride)  # stages 2.. that keep their stride of 2
        if keep > len(strided):
            raise ValueError(f"output stride {output_stride} needs {keep} strided stages; {stages} stages have "
                             f"{len(strided)}")
        for stage in strided[keep:]:
            stage[0].conv1.stride = (1, 1)
            stage[0].downsample[0].stride = (1, 1)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, *strided)
        self.out_channels = 512 if stages == 4 else 256
        self.saliency_head = nn.Conv2d(self.out_channels, num_classes, 1, bias=False)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.body(patches)
        return fmap.mean((2, 3)), torch.sigmoid(self.saliency_head(fmap))


class GatedAttention(nn.Module):
    """Gated-attention MIL pooling (Ilse et al. 2018), as GMIC's AttentionModule.

    a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k))); z = sum_k a_k h_k; y = sigmoid(W z).

    Returns:
        z: (N, D) attended feature; attention: (N, K), sums to 1; pred: (N, classes) in [0, 1].
    """

    def __init__(self, dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.v = nn.Linear(dim, hidden, bias=False)
        self.u = nn.Linear(dim, hidden, bias=False)
        self.w = nn.Linear(hidden, 1, bias=False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attention = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1).softmax(1)
        z = (attention.unsqueeze(-1) * h).sum(1)
        return z, attention, torch.sigmoid(self.classifier(z))
