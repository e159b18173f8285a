"""The three networks of Tiryaki & Kaplanoglu's mass pipeline, in Keras: U-net5L (breast), U-net++
with a pluggable encoder (mass) and the benign/malignant ROI classifier.

Keras/tensorflow are imported only inside the builders, through `mammo.models.frameworks`.
Every network takes float32 (N, H, W, 1) grey images in [0, 1], channels last; networks with a
pretrained VGG16 turn that into the caffe BGR input VGG16 was trained on themselves
(`grey_to_caffe`), so callers never normalise.

- `build_unet5l`: five levels (four poolings + bridge), each two 3x3 conv-BN-ReLU, dropout after
  each pooling, 2x2 transposed-convolution up-sampling; `top_filters` doubles per level (the
  published U-net5L has 16). Output: (N, H, W, 1) sigmoid.
- `build_unetpp`: U-net++ (Zhou et al. 2018) on four encoder feature maps at strides 2, 4, 8 and
  16 plus the input itself at stride 1, as the published U-net++/Xception; nested decoder nodes
  are two 3x3 conv-BN-dropout units with `top_filters * 2**level` filters. Encoders:
  "xception" (the published one; random init here: no offline ImageNet Xception exists) and
  "vgg16" (the packaged HED/ImageNet convs of `mammo.models.pretrained`).
- `build_classifier`: a backbone ("vgg16" pretrained; "inceptionv3", "resnet50v2" from scratch)
  -> global average pooling -> dropout -> one sigmoid: P(malignant) of a mass ROI.

VGG16 here stops after block 4 (`VGG16_LAST`; its stride-16 tap is block 4's max-pool): block 5
holds 7.1 M of VGG16's 14.7 M conv weights, and with it neither network fits the 25 MB a
weights file may have, even in fp16 (the U-net++ would be 33.6 MB).
"""

from __future__ import annotations

from typing import Any

from mammo.models.frameworks import import_keras

ENCODERS = ("vgg16", "xception")
CLASSIFIER_BACKBONES = ("vgg16", "inceptionv3", "resnet50v2")
# Feature taps (stride 2, 4, 8, 16) of each encoder, by Keras layer name. Xception's are the layers
# the published U-net++/Xception takes (indices 11, 21, 31, 121 of keras.applications.Xception).
_TAPS = {
    "vgg16": ("block2_conv2", "block3_conv3", "block4_conv3", "block4_pool"),
    "xception": ("block2_sepconv2_bn", "block3_sepconv2_bn", "block4_sepconv2_bn", "block13_sepconv2_bn"),
}
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
VGG16_LAST = "block4_pool"


def vgg16_trunk(height: int, width: int, pretrained: bool, frozen_until: str | None = None) -> Any:
    """VGG16 up to `VGG16_LAST` on (N, height, width, 3) caffe-BGR input; layers before
    `frozen_until` (a layer name) are not trainable."""
    from mammo.models.pretrained import keras_vgg16

    keras = import_keras()
    full = keras_vgg16((height, width, 3), weights="imagenet" if pretrained else None)
    trunk = keras.Model(full.input, full.get_layer(VGG16_LAST).output, name="vgg16")
    if frozen_until:
        names = [layer.name for layer in trunk.layers]
        for layer in trunk.layers[:names.index(frozen_until)]:
            layer.trainable = False
    return trunk


def grey_to_caffe(keras: Any, x: Any) -> Any:
    """(N, H, W, 1) grey in [0, 1] -> (N, H, W, 3) BGR 0-255 minus the caffe mean (VGG16's input)."""
    rgb = keras.layers.Concatenate(name="grey_to_bgr")([x, x, x])
    return keras.layers.Rescaling(255.0, offset=[-m for m in CAFFE_BGR_MEAN], name="caffe_mean")(rgb)


def _conv_bn_relu(keras: Any, x: Any, filters: int, name: str) -> Any:
    x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_unet5l(height: int, width: int, top_filters: int = 16, dropout: float = 0.2,
                 name: str = "unet5l") -> Any:
    """U-net5L. Input (N, height, width, 1) in [0, 1]; output (N, height, width, 1) probabilities.

    Raises:
        ValueError: height or width not divisible by 16.
    """
    if height % 16 or width % 16:
        raise ValueError(f"U-net5L input {height}x{width} must be divisible by 16 (four poolings)")
    keras = import_keras()
    inputs = keras.Input((height, width, 1), name="image")
    x, skips = inputs, []
    for level in range(4):
        x = _conv_bn_relu(keras, x, top_filters * 2 ** level, f"enc{level}a")
        x = _conv_bn_relu(keras, x, top_filters * 2 ** level, f"enc{level}b")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = keras.layers.Dropout(dropout, name=f"drop{level}")(x)
    x = _conv_bn_relu(keras, x, top_filters * 16, "bridge_a")
    x = _conv_bn_relu(keras, x, top_filters * 16, "bridge_b")
    for level in reversed(range(4)):
        x = keras.layers.Conv2DTranspose(top_filters * 2 ** level, 2, strides=2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"merge{level}")([x, skips[level]])
        x = _conv_bn_relu(keras, x, top_filters * 2 ** level, f"dec{level}a")
        x = _conv_bn_relu(keras, x, top_filters * 2 ** level, f"dec{level}b")
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


def _fit(keras: Any, x: Any, height: int, width: int, name: str) -> Any:
    """Zero-pad at the top-left (as the published model does for Xception's valid convolutions)
    so that a feature map has exactly (height, width)."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == (height, width):
        return x
    if h > height or w > width:
        raise ValueError(f"{name}: feature map {h}x{w} is larger than {height}x{width}")
    return keras.layers.ZeroPadding2D(((height - h, 0), (width - w, 0)), name=f"{name}_pad")(x)


def _encoder(keras: Any, inputs: Any, encoder: str, pretrained: bool, frozen_until: str | None) -> list[Any]:
    """The four feature maps (strides 2, 4, 8, 16) of `encoder` on `inputs` (N, H, W, 1)."""
    if encoder == "vgg16":
        backbone = vgg16_trunk(inputs.shape[1], inputs.shape[2], pretrained, frozen_until)
        source = grey_to_caffe(keras, inputs)
    elif encoder == "xception":
        if pretrained:
            raise ValueError("no offline ImageNet Xception exists: build the xception encoder with pretrained=False")
        backbone = keras.applications.Xception(weights=None, include_top=False,
                                               input_shape=(inputs.shape[1], inputs.shape[2], 1))
        source = inputs
    else:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
    taps = keras.Model(backbone.input, [backbone.get_layer(n).output for n in _TAPS[encoder]],
                       name=f"{encoder}_encoder")
    features = taps(source)
    h, w = inputs.shape[1], inputs.shape[2]
    return [_fit(keras, f, h // 2 ** (i + 1), w // 2 ** (i + 1), f"tap{i + 1}") for i, f in enumerate(features)]


def _unit(keras: Any, x: Any, filters: int, dropout: float, name: str) -> Any:
    for k in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                                name=f"{name}_conv{k}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{k}")(x)
        x = keras.layers.Dropout(dropout, name=f"{name}_drop{k}")(x)
    return x


def build_unetpp(height: int, width: int, encoder: str = "vgg16", pretrained: bool = True,
                 top_filters: int = 16, dropout: float = 0.2, frozen_until: str | None = None,
                 name: str = "unetpp") -> Any:
    """U-net++ on an `encoder`. Input (N, height, width, 1) in [0, 1]; output (N, height, width, 1).

    `frozen_until`: a VGG16 layer name; the encoder's layers before it are not trained (e.g.
    "block3_conv1" keeps the full-resolution edge filters of blocks 1-2 and saves their backward pass).

    Node X[i][j] (level i, column j) = unit(concat(X[i][0..j-1], up(X[i+1][j-1]))); X[0][0] is the
    input image, X[1..4][0] the encoder taps; the output is a 1x1 sigmoid on X[0][4].

    Raises:
        ValueError: unknown encoder, sizes not divisible by 16, or a pretrained xception.
    """
    if height % 16 or width % 16:
        raise ValueError(f"U-net++ input {height}x{width} must be divisible by 16")
    keras = import_keras()
    inputs = keras.Input((height, width, 1), name="image")
    nodes = [[inputs]] + [[f] for f in _encoder(keras, inputs, encoder, pretrained, frozen_until)]
    for j in range(1, 5):
        for i in range(0, 5 - j):
            filters = top_filters * 2 ** i
            up = keras.layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{i}{j}")(nodes[i + 1][j - 1])
            merged = keras.layers.Concatenate(name=f"merge{i}{j}")([up, *nodes[i][:j]])
            nodes[i].append(_unit(keras, merged, filters, dropout, f"x{i}{j}"))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(nodes[0][4])
    return keras.Model(inputs, outputs, name=f"{name}_{encoder}")


def build_classifier(size: int, backbone: str = "vgg16", pretrained: bool = True, dropout: float = 0.5,
                     trainable_from: str | None = "block4_conv1", name: str = "mass_classifier") -> Any:
    """ROI classifier. Input (N, size, size, 1) in [0, 1]; output (N, 1) P(malignant).

    `trainable_from`: for a pretrained VGG16, layers before this one stay frozen (few ROIs:
    fine-tuning only the last block keeps the ImageNet features); None trains everything.

    Raises:
        ValueError: unknown backbone, or a pretrained backbone other than vgg16.
    """
    keras = import_keras()
    inputs = keras.Input((size, size, 1), name="roi")
    if backbone == "vgg16":
        base = vgg16_trunk(size, size, pretrained, trainable_from if pretrained else None)
        x = base(grey_to_caffe(keras, inputs))
    elif backbone in ("inceptionv3", "resnet50v2"):
        if pretrained:
            raise ValueError(f"no offline ImageNet {backbone}: build it with pretrained=False")
        app = keras.applications.InceptionV3 if backbone == "inceptionv3" else keras.applications.ResNet50V2
        x = app(weights=None, include_top=False, input_shape=(size, size, 1))(inputs)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {CLASSIFIER_BACKBONES}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="head_drop")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="malignant")(x)
    return keras.Model(inputs, outputs, name=f"{name}_{backbone}")


def parse_architecture(architecture: str) -> tuple[str, str, int]:
    """A manifest `architecture` string -> (kind, encoder or backbone, top filters):
    "unet5l-f16" -> ("unet5l", "", 16); "unetpp-vgg16-f16" -> ("unetpp", "vgg16", 16);
    "classifier-vgg16" -> ("classifier", "vgg16", 0).

    Raises:
        ValueError: anything else (the message lists the valid forms).
    """
    parts = architecture.split("-")
    filters = int(parts[-1][1:]) if parts[-1][:1] == "f" and parts[-1][1:].isdigit() else 0
    if parts[0] == "unet5l" and len(parts) == 2 and filters:
        return "unet5l", "", filters
    if parts[0] == "unetpp" and len(parts) == 3 and parts[1] in ENCODERS and filters:
        return "unetpp", parts[1], filters
    if parts[0] == "classifier" and len(parts) == 2 and parts[1] in CLASSIFIER_BACKBONES:
        return "classifier", parts[1], 0
    raise ValueError(f"unknown tiryaki architecture {architecture!r}: expected unet5l-fN, "
                     f"unetpp-<{'|'.join(ENCODERS)}>-fN or classifier-<{'|'.join(CLASSIFIER_BACKBONES)}>")


def build_from_architecture(architecture: str, input_size: tuple[int, int], pretrained: bool = False,
                            frozen_until: str | None = None) -> Any:
    """The network an `architecture` string names (see `parse_architecture`). Loading trained
    weights needs no pretrained package (`pretrained=False`, the default); training passes
    `pretrained` and `frozen_until` (see `build_unetpp`, `build_classifier`)."""
    kind, encoder, filters = parse_architecture(architecture)
    h, w = input_size
    if kind == "unet5l":
        return build_unet5l(h, w, top_filters=filters)
    if kind == "unetpp":
        return build_unetpp(h, w, encoder, pretrained=pretrained, top_filters=filters, frozen_until=frozen_until)
    return build_classifier(h, encoder, pretrained=pretrained, trainable_from=frozen_until)


class KerasNet:
    """A built network for inference: `net(batch)` float32 (N, h, w, 1) -> numpy outputs.

    A traced function avoids `Model.predict`'s per-call overhead on single images."""

    def __init__(self, model: Any) -> None:
        from mammo.models.frameworks import import_tensorflow

        self.model = model
        tf = import_tensorflow()
        self._forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) the network takes."""
        return int(self.model.input_shape[1]), int(self.model.input_shape[2])

    def __call__(self, batch: Any) -> Any:
        import numpy as np

        return np.asarray(self._forward(np.ascontiguousarray(batch, dtype=np.float32)))

    @classmethod
    def load(cls, architecture: str, input_size: tuple[int, int], weights: str) -> KerasNet:
        """`build_from_architecture` + the `.weights.h5` file (fp16 or fp32 arrays)."""
        model = build_from_architecture(architecture, input_size)
        model.load_weights(str(weights))
        return cls(model)
