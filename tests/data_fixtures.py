"""Per-dataset skips: a data folder may hold MNIST, CIFAR-10 or both.

The ``data_dir`` fixture of conftest.py stands for a folder holding at least one of them; a test
that needs one in particular asks ``dataset_root`` and is skipped, saying which copy is missing,
when that one is not there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nnbench import datasets

#: dataset -> (folder inside the data root, name in messages)
DATASETS = {
    "mnist": (datasets.MNIST_DIR, "MNIST"),
    "cifar10": (datasets.CIFAR10_DIR, "CIFAR-10"),
}


def dataset_root(data_dir: Path, dataset: str) -> Path:
    """``data_dir`` if it holds ``dataset`` (``"mnist"`` or ``"cifar10"``); else skip the test."""
    folder, title = DATASETS[dataset]
    if not (data_dir / folder).is_dir():
        pytest.skip(
            f"no {title} copy: {data_dir / folder} is missing (set NNBENCH_DATA to a folder "
            f"holding {folder}/)"
        )
    return data_dir
