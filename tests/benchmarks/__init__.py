"""pytest-benchmark suite: every convolution backend on the shapes of ``nnbench.bench``.

Skipped by plain ``pytest`` (``--benchmark-skip`` in addopts); run with
``pytest tests/benchmarks --benchmark-only`` or ``tox -e bench``.
"""
