"""Train the ``digits`` model (scikit-learn's 8x8 handwritten digits).

Version 1: a small MLP served as a TF SavedModel.
Version 2: a small CNN with Dropout served as float32 TFLite.

Input ``pixels``: FP32 [-1, 8, 8, 1], grey level / 16 (0 = background,
1 = full ink).  Output ``logits``: FP32 [-1, 10] (no softmax in the model).
The holdout split is saved to ``models/digits/holdout.npz``, calibration samples for int8
quantization to ``calibration.npz`` (``--eval-data-only`` writes just these and model.toml).

Run with ``python -m training.digits``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import common

NAME = "digits"
LABELS = [str(i) for i in range(10)]
INPUT_NAME = "pixels"
DESCRIPTION = "Handwritten digits 0-9, trained on scikit-learn's load_digits (8x8 grey images)"
DATASET = "sklearn.datasets.load_digits (1797 images, 8x8, 17 grey levels)"
SPLIT = "stratified 80/20, random_state=0"
AUGMENTATION = (
    "every +-1 pixel shift (9 copies of each training image) plus 2 copies re-derived from a "
    "blown-up picture (crop to ink, fit to 32x32, binarise, count 4x4 blocks) like an upload"
)

V1_EPOCHS = 40
V2_EPOCHS = 40
BATCH_SIZE = 64

PREPROCESS = [
    {"step": "decode_image", "mode": "L"},
    {"step": "digit_ink", "size": 8, "levels": 16},
]


def load_data():
    """(x_train, y_train, x_holdout, y_holdout); x is float32 N x 8 x 8 x 1 in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = common.stratified_split(x, y, test_size=0.2, random_state=0)
    return x_train, y_train, x_test, y_test


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift N x H x W x C images by (dy, dx) pixels, filling with background (0)."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


REDRAW_COPIES = 2


def redraw(
    image: np.ndarray, rng: np.random.Generator, cells: int = 8, levels: int = 16
) -> np.ndarray:
    """Re-derive an 8x8 grid from a blown-up picture of ``image``, as for an upload.

    ``load_digits`` grids were made from 32x32 bitmaps of the digit scaled to fill
    the box and centred, counting ink pixels per 4x4 block.  An uploaded picture
    goes through the same kind of normalisation on the server (crop to the ink,
    fit, binarise, count), which does not give back exactly the original grid.
    This simulates that with a random upscale factor and binarisation threshold so
    the model sees such grids in training.  ``image``: H x W x 1 in [0, 1].
    """
    from PIL import Image

    grid = image[..., 0]
    peak = float(grid.max())
    if peak <= 0:
        return image.copy()
    factor = int(rng.choice([4, 6, 8, 12]))
    big = np.kron(grid / peak, np.ones((factor, factor), dtype=np.float32))
    rows = np.flatnonzero((big >= 0.35).any(axis=1))
    cols = np.flatnonzero((big >= 0.35).any(axis=0))
    crop = big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = cells * 4
    h, w = crop.shape
    new_w, new_h = max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w)))
    glyph = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS
    )
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = np.asarray(glyph, dtype=np.float32) / 255
    on = canvas >= float(rng.uniform(0.3, 0.45))
    counts = on.reshape(cells, 4, cells, 4).sum(axis=(1, 3)) * (levels / 16)
    return (np.round(counts) / levels).astype(np.float32)[..., None]


def augment(x: np.ndarray, y: np.ndarray, seed: int = common.SEED) -> tuple[np.ndarray, np.ndarray]:
    """All nine +-1 pixel shifts of every image plus ``REDRAW_COPIES`` redrawn copies.

    Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    xs = [shift(x, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for _ in range(REDRAW_COPIES):
        xs.append(np.stack([redraw(img, rng) for img in x]))
    return np.concatenate(xs, axis=0), np.tile(y, len(xs))


def build_mlp():
    import keras
    from keras import layers

    inp = keras.Input(shape=(8, 8, 1), name=INPUT_NAME)
    x = layers.Flatten()(inp)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="digits_mlp")


def build_cnn():
    import keras
    from keras import layers

    inp = keras.Input(shape=(8, 8, 1), name=INPUT_NAME)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)  # 4x4
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)  # 2x2
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="digits_cnn")


def train(model, x, y, epochs: int):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)
    return model


def manifest(runtime: str, artifact: str, architecture: str, epochs: int, holdout_size: int):
    return common.version_manifest(
        script="training/digits.py",
        runtime=runtime,
        artifact=artifact,
        input_name=INPUT_NAME,
        input_shape=[8, 8, 1],
        classes=10,
        preprocess=PREPROCESS,
        provenance={
            "dataset": DATASET,
            "split": SPLIT,
            "augmentation": AUGMENTATION,
            "holdout_size": holdout_size,
            "architecture": architecture,
            "epochs": epochs,
        },
    )


def write_eval_data(model_dir: Path) -> None:
    """model.toml and the data `flask models optimize` evaluates and calibrates with: the
    holdout split, and ``CALIBRATION_SIZE`` un-augmented training images."""
    x_train, y_train, x_test, y_test = load_data()
    model_dir.mkdir(parents=True, exist_ok=True)
    common.write_model_toml(
        model_dir, DESCRIPTION, LABELS, holdout="holdout.npz", calibration="calibration.npz"
    )
    common.save_npz_atomic(
        model_dir / "holdout.npz", x=x_test.astype(np.float32), y=y_test.astype(np.int64)
    )
    rows = common.calibration_rows(len(x_train))
    common.save_npz_atomic(
        model_dir / "calibration.npz",
        x=x_train[rows].astype(np.float32),
        y=y_train[rows].astype(np.int64),
    )


def main(models_dir: Path = common.MODELS_DIR, eval_data_only: bool = False) -> list[dict]:
    model_dir = Path(models_dir) / NAME
    write_eval_data(model_dir)
    if eval_data_only:
        return []
    common.set_determinism(common.SEED)
    import keras

    common.cleanup_stale(model_dir)
    x_train, y_train, x_test, y_test = load_data()
    x_aug, y_aug = augment(x_train, y_train)

    summaries = []
    with common.Timer() as t:
        keras.utils.set_random_seed(common.SEED)
        mlp = train(build_mlp(), x_aug, y_aug, V1_EPOCHS)
        summaries.append(
            common.build_version(
                mlp,
                model_dir,
                1,
                "savedmodel",
                INPUT_NAME,
                x_test,
                y_test,
                manifest(
                    "savedmodel",
                    "saved_model",
                    "MLP: Flatten -> Dense(128, relu) -> Dense(64, relu) -> Dense(10) logits",
                    V1_EPOCHS,
                    len(y_test),
                ),
            )
        )
    common.report(summaries[-1], t.seconds)

    keras.backend.clear_session()
    with common.Timer() as t:
        keras.utils.set_random_seed(common.SEED)
        cnn = train(build_cnn(), x_aug, y_aug, V2_EPOCHS)
        summaries.append(
            common.build_version(
                cnn,
                model_dir,
                2,
                "tflite",
                INPUT_NAME,
                x_test,
                y_test,
                manifest(
                    "tflite",
                    "model.tflite",
                    "CNN: Conv(32)-Conv(32)-MaxPool-Conv(64)-MaxPool -> Dropout(0.3) -> "
                    "Dense(128, relu) -> Dropout(0.3) -> Dense(10) logits",
                    V2_EPOCHS,
                    len(y_test),
                ),
            )
        )
    common.report(summaries[-1], t.seconds)
    if summaries[-1]["holdout_accuracy"] < 0.97:
        raise SystemExit(
            f"digits v2 holdout accuracy {summaries[-1]['holdout_accuracy']:.4f} < 0.97"
        )
    return summaries


if __name__ == "__main__":
    args = common.parse_args(__doc__.splitlines()[0])
    with common.Timer() as total:
        main(args.models_dir, args.eval_data_only)
    print(f"[digits] done in {total.seconds:.1f}s", flush=True)
