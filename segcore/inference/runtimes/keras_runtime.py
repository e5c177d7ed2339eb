"""The reference runtime: the Keras model called through TensorFlow in float32."""

from __future__ import annotations

from typing import Any

import numpy as np

from segcore.inference.runtimes.base import KERAS, RuntimeModel


def keras_runtime(model: Any) -> RuntimeModel:
    """Wraps a loaded ``keras.Model`` as a :class:`RuntimeModel`.

    Each batch size H×W gets the cached ``tf.function`` of
    :func:`segcore.inference.predict.keras_function` (traced once per model and size).
    """
    import keras

    from segcore.inference.predict import keras_function

    def predict(batch: np.ndarray) -> np.ndarray:
        function = keras_function(model, batch.shape[1], batch.shape[2])
        return function(batch).numpy()

    return RuntimeModel(
        name=KERAS,
        predict=predict,
        any_size=False,
        detail=f"TensorFlow float32, Keras {keras.__version__}",
    )
