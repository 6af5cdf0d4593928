"""Size, latency and holdout accuracy of every optimization mode for the bundled models.

From the repository root::

    .venv/bin/python bench/optimize.py                              # digits 1, shapes 1: ~1 min
    .venv/bin/python bench/optimize.py --sources digits:1 --modes float32 int8

For each source (a SavedModel version) it runs ``serving.optimize.optimize`` once per mode in
a throwaway copy of the model's directory (``models/`` is never written), without an accuracy
limit, and prints one table: the float32 source as served (SavedModel), then the TFLite result
of each mode. Figures are those the command records in a manifest: artifact bytes, the median
latency of the server's runtime call (one inference thread) for one item and for a batch of
``max_batch_size``, and accuracy on the model's declared holdout set. Under the table, the
issue's targets for int8, against float32 TFLite (the same graph unquantized) and against the
source. Latencies come from a shared 2-core machine: expect a few percent of noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # Run as a script (bench/optimize.py), the repository root is not on the path.
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving.optimize import MODES, OptimizeResult, optimize  # noqa: E402
from serving.optimize.measure import Measurement, machine, median_ms  # noqa: E402

SIZE_TARGET = 3.5
SPEED_TARGET = 1.3
DROP_TARGET_PP = 1.0


def invoke_only_ms(artifact: Path) -> float:
    """Median of ``Interpreter.invoke()`` alone, input set once: the model's own compute,
    without the per-call cost of setting and reading tensors from Python."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact), num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    return median_ms(interpreter.invoke, 300)


def run(
    models: Path, model: str, version: int, modes: list[str]
) -> tuple[list[OptimizeResult], dict[str, float]]:
    """One optimization per mode, and each result's invoke-only latency."""
    results, invoke = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
        root = Path(tmp)
        shutil.copytree(models / model, root / model)
        for mode in modes:
            print(f"  {model}/{version} -> {mode} ...", file=sys.stderr, flush=True)
            result = optimize(root, model, version, mode, max_accuracy_drop=1.0)
            results.append(result)
            invoke[mode] = invoke_only_ms(result.path / "model.tflite")
    return results, invoke


def row(name: str, m: Measurement, base: Measurement | None) -> list[str]:
    size_x = f"{base.artifact_bytes / m.artifact_bytes:.2f}x" if base else ""
    speed_x = f"{base.latency_single_ms / m.latency_single_ms:.2f}x" if base else ""
    return [
        name,
        f"{m.artifact_bytes:,}",
        size_x,
        f"{m.latency_single_ms:.4f}",
        speed_x,
        f"{m.latency_batch_ms:.3f}",
        f"{m.accuracy:.2%}",
    ]


def table(source: str, results: list[OptimizeResult]) -> str:
    by_mode = {r.mode: r.result for r in results}
    base = by_mode.get("float32")
    header = [
        "variant",
        "bytes",
        "vs f32 tflite",
        "ms, 1 item",
        "vs f32 tflite",
        f"ms, {results[0].result.batch_size} items",
        f"accuracy (n={results[0].result.holdout_size})",
    ]
    rows = [header, row(f"float32 source ({source}, SavedModel)", results[0].source, base)]
    rows += [row(f"tflite {r.mode}", r.result, base) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    # The first column is text (left), the others figures (right).
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def targets(results: list[OptimizeResult], invoke: dict[str, float]) -> list[str]:
    by_mode = {r.mode: r for r in results}
    if "int8" not in by_mode:
        return []
    int8 = by_mode["int8"]
    source, quantized = int8.source, int8.result
    lines = []
    drop_pp = int8.accuracy_drop * 100 + 0.0
    for name, base in (("float32 TFLite", by_mode.get("float32")), ("the SavedModel source", None)):
        reference = base.result if base else source
        size_x = reference.artifact_bytes / quantized.artifact_bytes
        speed_x = reference.latency_single_ms / quantized.latency_single_ms
        lines.append(
            f"  int8 vs {name}: {size_x:.4f}x smaller ({verdict(size_x >= SIZE_TARGET)} "
            f">= {SIZE_TARGET}x), single item {speed_x:.2f}x faster "
            f"({verdict(speed_x >= SPEED_TARGET)} >= {SPEED_TARGET}x)"
        )
    lines.append(
        f"  int8 accuracy drop: {drop_pp:+.2f} pp ({verdict(drop_pp <= DROP_TARGET_PP)} "
        f"<= {DROP_TARGET_PP} pp)"
    )
    if "float32" in invoke:
        lines.append(
            f"  invoke() alone, no Python tensor copies: float32 TFLite "
            f"{invoke['float32'] * 1000:.2f} us, int8 {invoke['int8'] * 1000:.2f} us "
            f"({invoke['float32'] / invoke['int8']:.2f}x)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    parser.add_argument(
        "--sources", nargs="+", default=["digits:1", "shapes:1"], help="model:version ..."
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    modes = ["float32", *[m for m in args.modes if m != "float32"]]
    print(f"measured on {machine()}\n")
    for source in args.sources:
        model, _, version = source.partition(":")
        results, invoke = run(args.models, model, int(version), modes)
        print(f"{model} (from version {version})")
        print(table(f"{model}/{version}", results))
        print("\n".join(targets(results, invoke)))
        print()


if __name__ == "__main__":
    main()
