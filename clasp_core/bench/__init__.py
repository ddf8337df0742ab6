"""Benchmarks of the engine: ``python -m clasp_core.bench`` (Spec-Bench run), ``.sweep``, ``.shapes``.

``stats`` holds the pure functions over result rows (read by the figures in ``ui``), ``common``
the CLI helpers, ``methods`` how each bench method runs, ``specbench`` the answer-file writer.
"""
