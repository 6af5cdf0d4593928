"""Train the ``iris`` model (scikit-learn's iris flowers, tabular).

Version 1: a small MLP served as float32 TFLite.  Feature standardisation is a
Keras ``Normalization`` layer inside the model (adapted on the training
split), so the server passes raw centimetres.

Input ``features``: FP32 [-1, 4] = sepal_length, sepal_width, petal_length,
petal_width (cm).  Output ``logits``: FP32 [-1, 3] (no softmax in the model).

Run with ``python -m training.iris``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import common

NAME = "iris"
LABELS = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
INPUT_NAME = "features"
DESCRIPTION = (
    "Iris species from four flower measurements in cm, trained on scikit-learn's load_iris"
)
DATASET = "sklearn.datasets.load_iris (150 flowers, 4 features in cm, 3 classes)"
SPLIT = "stratified 80/20, random_state=0"
EPOCHS = 100
LEARNING_RATE = 3e-3
BATCH_SIZE = 16

PREPROCESS = [{"step": "features", "names": FEATURES}]
ARCH = (
    "MLP: Normalization (mean/variance adapted on the training split) -> Dense(16, relu) -> "
    "Dense(16, relu) -> Dense(3) logits"
)


def load_data():
    """(x_train, y_train, x_holdout, y_holdout); x is float32 N x 4 in cm."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target.astype(np.int64)
    x_train, x_test, y_train, y_test = common.stratified_split(x, y, test_size=0.2, random_state=0)
    return x_train, y_train, x_test, y_test


def build_mlp(x_train: np.ndarray):
    import keras
    from keras import layers

    norm = layers.Normalization(axis=-1, name="standardize")
    norm.adapt(x_train)
    inp = keras.Input(shape=(len(FEATURES),), name=INPUT_NAME)
    x = norm(inp)
    x = layers.Dense(16, activation="relu")(x)
    x = layers.Dense(16, activation="relu")(x)
    out = layers.Dense(len(LABELS), name="logits")(x)
    return keras.Model(inp, out, name="iris_mlp")


def manifest(holdout_size: int):
    return common.version_manifest(
        script="training/iris.py",
        runtime="tflite",
        artifact="model.tflite",
        input_name=INPUT_NAME,
        input_shape=[len(FEATURES)],
        classes=len(LABELS),
        preprocess=PREPROCESS,
        provenance={
            "dataset": DATASET,
            "split": SPLIT,
            "holdout_size": holdout_size,
            "architecture": ARCH,
            "epochs": EPOCHS,
        },
    )


def write_eval_data(model_dir: Path) -> None:
    """model.toml, the holdout split and the training rows as calibration samples."""
    x_train, y_train, x_test, y_test = load_data()
    model_dir.mkdir(parents=True, exist_ok=True)
    common.write_model_toml(
        model_dir, DESCRIPTION, LABELS, holdout="holdout.npz", calibration="calibration.npz"
    )
    common.save_npz_atomic(model_dir / "holdout.npz", x=x_test, y=y_test)
    rows = common.calibration_rows(len(x_train))
    common.save_npz_atomic(model_dir / "calibration.npz", x=x_train[rows], y=y_train[rows])


def main(models_dir: Path = common.MODELS_DIR, eval_data_only: bool = False) -> list[dict]:
    model_dir = Path(models_dir) / NAME
    write_eval_data(model_dir)
    if eval_data_only:
        return []
    common.set_determinism(common.SEED)
    import keras

    common.cleanup_stale(model_dir)
    x_train, y_train, x_test, y_test = load_data()

    with common.Timer() as t:
        keras.utils.set_random_seed(common.SEED)
        model = build_mlp(x_train)
        model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=True, verbose=0)
        summary = common.build_version(
            model, model_dir, 1, "tflite", INPUT_NAME, x_test, y_test, manifest(len(y_test))
        )
    common.report(summary, t.seconds)
    return [summary]


if __name__ == "__main__":
    args = common.parse_args(__doc__.splitlines()[0])
    with common.Timer() as total:
        main(args.models_dir, args.eval_data_only)
    print(f"[iris] done in {total.seconds:.1f}s", flush=True)
