"""What is in a graph: the training-only parts of a source, the ops of a served TFLite model.

A source graph is a list of ``(node name, op type)`` pairs: the ``serving_default`` function of
a SavedModel with every function it calls, or a Keras model traced with ``training=True``
(the graph that *has* dropout, noise and batch statistics). Training-only nodes fall into a few
categories; the converted TFLite graph must hold none of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Category -> what conversion for inference does to it.
FATE = {
    "variable update": "removed (served weights are constants)",
    "dropout / random": "removed (inference does not sample)",
    "batch norm": "folded into constant weights",
    "training branch": "resolved to the inference branch",
}
_UPDATE_OPS = {
    "Assign",
    "AssignAdd",
    "AssignSub",
    "AssignVariableOp",
    "AssignAddVariableOp",
    "AssignSubVariableOp",
}
_BRANCH_OPS = {"If", "StatelessIf", "Case", "StatelessCase", "Switch", "Merge"}
_RANDOM_MARKERS = ("Random", "Rng", "TruncatedNormal", "Multinomial")
# Scope names TensorFlow itself gives batch normalisation (tf.nn.batch_normalization,
# tf.nn.moments), whatever the user called the layer.
_BATCH_NORM_SCOPES = {"batchnorm", "moments"}
_DROPOUT_MARKERS = ("dropout", "noise")
# Nodes that compute nothing: not worth listing as removed.
_INERT_OPS = {"Const", "Identity", "NoOp", "Placeholder"}

# In a TFLite graph: builtins that sample or update state, and select-TF ("Flex") or custom
# ops named like training-only TensorFlow ops.
_TFLITE_TRAINING_BUILTINS = {
    "RANDOM_UNIFORM",
    "RANDOM_STANDARD_NORMAL",
    "MULTINOMIAL",
    "ASSIGN_VARIABLE",
}
_TFLITE_TRAINING_MARKERS = ("Random", "Rng", "Dropout", "BatchNorm", "Assign", "Multinomial")


def category(name: str, op: str) -> str | None:
    """The training-only category of one node, or None for an inference node."""
    scopes = [part.lower() for part in name.split("/")[:-1]]
    if op in _INERT_OPS:
        return None
    if op in _UPDATE_OPS:
        return "variable update"
    if any(marker in op for marker in _RANDOM_MARKERS):
        return "dropout / random"
    if op.startswith("FusedBatchNorm") or any(s in _BATCH_NORM_SCOPES for s in scopes):
        return "batch norm"
    if any(m in s for s in scopes for m in _DROPOUT_MARKERS):
        return "dropout / random"
    if op in _BRANCH_OPS:
        return "training branch"
    return None


def training_nodes(nodes: Iterable[tuple[str, str]]) -> dict[str, Counter[str]]:
    """Training-only op types per category, counted."""
    found: dict[str, Counter[str]] = {}
    for name, op in nodes:
        kind = category(name, op)
        if kind is not None:
            found.setdefault(kind, Counter())[op] += 1
    return found


def describe(found: dict[str, Counter[str]], layers: Sequence[str] = ()) -> list[str]:
    """One line per category: what it held and what conversion did to it."""
    lines = []
    for kind in FATE:
        ops = found.get(kind)
        if not ops:
            continue
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda i: -i[1]))
        lines.append(f"{kind}: {sum(ops.values())} ops ({listed}): {FATE[kind]}")
    if layers:
        lines.append("Keras layers active only in training: " + ", ".join(layers))
    return lines


def _graph_nodes(graph_def: Any) -> list[tuple[str, str]]:
    nodes = [(n.name, n.op) for n in graph_def.node]
    for function in graph_def.library.function:
        nodes += [(n.name, n.op) for n in function.node_def]
    return nodes


def savedmodel_nodes(path: Path) -> list[tuple[str, str]]:
    """The nodes of a SavedModel's ``serving_default`` function and every function it calls."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return _graph_nodes(signature.graph.as_graph_def())


# Keras layers whose inference behaviour is the identity (or, for batch norm, an affine map
# the converter folds): listed by class name so the report can name them.
_TRAINING_LAYERS = {
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "BatchNormalization",
}


def keras_training_layers(model: Any) -> list[str]:
    """``name (Class)`` of every layer that only matters in training, including random
    augmentation layers (``Random*``)."""
    found = []
    for layer in getattr(model, "layers", []):
        kind = type(layer).__name__
        if kind in _TRAINING_LAYERS or kind.startswith("Random"):
            found.append(f"{layer.name} ({kind})")
        found += keras_training_layers(layer)  # nested models
    return found


def keras_training_nodes(model: Any) -> list[tuple[str, str]]:
    """The nodes of ``model`` traced with ``training=True``: what a training step runs."""
    import tensorflow as tf

    specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]

    def call(*inputs: Any) -> Any:
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=True)

    concrete = tf.function(call).get_concrete_function(*specs)
    return _graph_nodes(concrete.graph.as_graph_def())


@dataclass(frozen=True)
class OpsReport:
    """What conversion removed, what the served graph holds, and which training-only ops
    remain in it (must be none)."""

    removed: tuple[str, ...]
    served: dict[str, int]
    remaining: tuple[str, ...]

    def served_lines(self) -> list[str]:
        return [f"{op} x{n}" for op, n in sorted(self.served.items(), key=lambda i: (-i[1], i[0]))]


def tflite_ops(model: bytes) -> Counter[str]:
    """Op counts of a TFLite flatbuffer, every subgraph: builtin names, or custom op names."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    flat = schema.Model.GetRootAsModel(model, 0)
    counts: Counter[str] = Counter()
    for g in range(flat.SubgraphsLength()):
        subgraph = flat.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            code = flat.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
            custom = code.CustomCode()
            if custom:
                counts[custom.decode()] += 1
            else:
                # Codes above 127 live in BuiltinCode; the deprecated byte holds the others.
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
    return counts


def training_ops_in_tflite(ops: Counter[str]) -> list[str]:
    """The training-only ops among a TFLite graph's ops."""
    return sorted(
        op
        for op in ops
        if op in _TFLITE_TRAINING_BUILTINS or any(m in op for m in _TFLITE_TRAINING_MARKERS)
    )


def report(
    source_nodes: Iterable[tuple[str, str]], model: bytes, layers: Sequence[str] = ()
) -> OpsReport:
    served = tflite_ops(model)
    return OpsReport(
        removed=tuple(describe(training_nodes(source_nodes), layers)),
        served=dict(served),
        remaining=tuple(training_ops_in_tflite(served)),
    )
