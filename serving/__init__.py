"""ModelGate's serving core: model repository, runtimes, pipelines and the inference facade.

Nothing below this package imports Flask; the web layer in ``blueprints/`` translates HTTP to
calls on :class:`serving.service.InferenceService`.
"""
