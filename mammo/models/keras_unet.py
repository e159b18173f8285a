"""The "slightly flexible" Keras UNet of the CDD-CESM tool, its loss and metric, and a predictor.

Keras and tensorflow are imported only through `mammo.models.frameworks.import_keras`, inside
the functions below, so importing this module loads neither (and never before torch's side).

Architecture (`build_unet`): `num_layers` levels counting the bridge. Each encoder level is
conv(`base_kernels`) -> conv(3x3) (ReLU, He init, "same" padding) -> dropout -> 2x2 max-pool, with
`base_filters * 2**level` filters; the bridge is the same two convolutions without pooling. Each
decoder level is a 3x3 stride-2 transposed convolution, concatenation with the skip of the same
level, dropout and two 3x3 convolutions. A 1x1 convolution with a sigmoid gives `num_classes`
probability planes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammo.models.frameworks import import_keras, import_tensorflow

SMOOTH = 1.0  # as the original: keeps Dice defined (=1) on an empty mask and an empty prediction
_REGISTERED: dict[str, Any] = {}


def set_threads(threads: int | None) -> None:
    """Limit tensorflow's CPU threads (call before the first op); None or 0 keeps the default."""
    if not threads:
        return
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: the first setting stays
        pass


def custom_objects() -> dict[str, Any]:
    """{"dice_coef": fn, "bce_dice_loss": fn}, registered with Keras once per process so that a
    saved model naming them loads (`keras.saving.register_keras_serializable`)."""
    if _REGISTERED:
        return dict(_REGISTERED)
    keras = import_keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="mammo", name="dice_coef")
    def dice_coef(y_true, y_pred):
        """Soft Dice over the whole batch (as the original): (2|X.Y| + 1) / (|X| + |Y| + 1)."""
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        inter = ops.sum(y_true * y_pred)
        return (2.0 * inter + SMOOTH) / (ops.sum(y_true) + ops.sum(y_pred) + SMOOTH)

    @keras.saving.register_keras_serializable(package="mammo", name="bce_dice_loss")
    def bce_dice_loss(y_true, y_pred):
        """Binary cross-entropy + (1 - dice_coef)."""
        bce = ops.mean(keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), y_pred))
        return bce + 1.0 - dice_coef(y_true, y_pred)

    _REGISTERED.update(dice_coef=dice_coef, bce_dice_loss=bce_dice_loss)
    return dict(_REGISTERED)


def resolve_names(loss: str, metrics: Sequence[str]) -> tuple[Any, list[Any]]:
    """Config names -> Keras loss and metrics: ours ("bce_dice_loss", "dice_coef") or Keras's own."""
    objects = custom_objects()
    return objects.get(loss, loss), [objects.get(m, m) for m in metrics]


def _conv(keras, x, filters: int, kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)):
    return keras.layers.Conv2D(filters, kernel, padding="same", activation="relu",
                               kernel_initializer="he_normal", dilation_rate=dilation)(x)


def build_unet(height: int, width: int, channels: int = 1, num_classes: int = 1, base_filters: int = 16,
               base_kernels: tuple[int, int] = (9, 9), num_layers: int = 8,
               dilation: tuple[int, int] = (1, 1), dropout_rate: float = 0.05,
               name: str = "TensorflowUNetModel"):
    """Build (not compile) the UNet; input float32 (N, height, width, channels) in [0, 1], output
    float32 (N, height, width, num_classes) probabilities in [0, 1].

    Raises:
        ValueError: height/width not divisible by 2**(num_layers - 1), or num_layers < 2.
    """
    if num_layers < 2:
        raise ValueError(f"num_layers must be >= 2 (levels including the bridge), got {num_layers}")
    factor = 2 ** (num_layers - 1)
    if height % factor or width % factor:
        raise ValueError(f"image {height}x{width} must be divisible by 2**(num_layers-1) = {factor}")
    keras = import_keras()
    inputs = keras.Input((height, width, channels), name="image")
    x, skips = inputs, []
    for level in range(num_layers - 1):
        filters = base_filters * 2 ** level
        x = _conv(keras, x, filters, tuple(base_kernels), tuple(dilation))
        x = _conv(keras, x, filters, (3, 3))
        x = keras.layers.Dropout(dropout_rate)(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
    bridge = base_filters * 2 ** (num_layers - 1)
    x = _conv(keras, x, bridge, tuple(base_kernels), tuple(dilation))
    x = _conv(keras, x, bridge, (3, 3))
    for level in reversed(range(num_layers - 1)):
        filters = base_filters * 2 ** level
        x = keras.layers.Conv2DTranspose(filters, (3, 3), strides=(2, 2), padding="same")(x)
        x = keras.layers.concatenate([x, skips[level]])
        x = keras.layers.Dropout(dropout_rate)(x)
        x = _conv(keras, x, filters, (3, 3))
        x = _conv(keras, x, filters, (3, 3))
    outputs = keras.layers.Conv2D(num_classes, (1, 1), activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_unet(model, learning_rate: float, loss: str = "bce_dice_loss",
                 metrics: Sequence[str] = ("dice_coef",)) -> None:
    """Adam(learning_rate) with the named loss and metrics."""
    keras = import_keras()
    loss_fn, metric_fns = resolve_names(loss, metrics)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_fn, metrics=metric_fns)


class KerasUNet:
    """A loaded UNet for inference: `predict(x)` with x float32 (h, w, C) -> float32 (h, w) in [0, 1]."""

    def __init__(self, model) -> None:
        self.model = model
        tf = import_tensorflow()
        # A traced function avoids Model.predict's per-call overhead (~50 ms) on single images.
        self._forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) the network takes."""
        return tuple(self.model.input_shape[1:3])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[3])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x float32 (h, w, C) in [0, 1] -> the first class's probability, float32 (h, w)."""
        out = self._forward(np.ascontiguousarray(x[None], dtype=np.float32))
        return np.asarray(out)[0, :, :, 0].astype(np.float32)

    @classmethod
    def from_files(cls, weights: str | os.PathLike[str], **architecture: Any) -> KerasUNet:
        """Build the UNet from `architecture` (`build_unet`'s keywords) and load `weights`
        (a Keras 3 ``.weights.h5``)."""
        model = build_unet(**architecture)
        model.load_weights(str(Path(weights)))
        return cls(model)
