"""A tiny Keras classifier with every training-only layer, and a repository that declares its
holdout and calibration data, for the optimize and import tests (TensorFlow, seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CENTRES = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]], dtype=np.float32)
LABELS = ["red", "green", "blue"]
# Feature 4 is always 0: a weight on it changes nothing in float, everything once quantized.
DEAD_FEATURE = 4
ROUTING = "[toy]\nlabels = { stable = 1 }\n"


@dataclass(frozen=True)
class Toy:
    root: Path  # a model root holding toy/1 (SavedModel imported from good.keras)
    good: Path  # the trained Keras file
    damaged: Path  # the same with a huge weight on the dead feature


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CENTRES), n)
    x = CENTRES[y] + rng.normal(0, 0.5, (n, CENTRES.shape[1])).astype(np.float32)
    x = np.concatenate([x, np.zeros((n, 1), np.float32)], axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def _train(path: Path) -> Any:
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="features")
    # Named: Keras numbers unnamed layers per process ("dropout_1" in the second test module).
    h = keras.layers.GaussianNoise(0.05, name="gaussian_noise")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="dense")(h)
    h = keras.layers.BatchNormalization(name="batch_normalization")(h)
    h = keras.layers.Dropout(0.2, name="dropout")(h)
    outputs = keras.layers.Dense(len(LABELS), name="logits")(h)
    model = keras.Model(inputs, outputs, name="toy")
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = sample(600, seed=1)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model.save(path)
    return model


def build(directory: Path) -> Toy:
    """Train the toy model, damage a copy, and lay out a repository with version 1."""
    from serving.modelimport import import_model

    directory.mkdir(parents=True, exist_ok=True)
    good, damaged = directory / "good.keras", directory / "damaged.keras"
    model = _train(good)
    dense = model.layers[2]
    kernel = dense.kernel.numpy()
    kernel[DEAD_FEATURE, :] = 1e4
    dense.kernel.assign(kernel)
    model.save(damaged)

    root = directory / "models"
    model_dir = root / "toy"
    model_dir.mkdir(parents=True)
    (root / "routing.toml").write_text(ROUTING)
    (model_dir / "model.toml").write_text(
        'description = "toy"\nlabels = ["red", "green", "blue"]\n'
        'holdout = "holdout.npz"\ncalibration = "calibration.npz"\n'
    )
    x, y = sample(300, seed=2)
    np.savez(model_dir / "holdout.npz", x=x, y=y)
    x, _ = sample(100, seed=3)
    np.savez(model_dir / "calibration.npz", x=x)
    import_model(root, good, "toy")
    return Toy(root=root, good=good, damaged=damaged)
