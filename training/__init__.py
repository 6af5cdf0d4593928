"""Deterministic training scripts for the models bundled with ModelGate.

``python -m training`` builds every model; ``python -m training.digits``,
``python -m training.shapes`` and ``python -m training.iris`` build one each.
Artifacts are written to ``models/<name>/`` at the repository root.
"""
