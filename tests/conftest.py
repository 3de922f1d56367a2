"""Shared pytest fixtures: tiny datasets written in the real on-disk formats."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cl_bench.cli import main


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.name.endswith(".gz") else payload)
    return path


def fake_fmnist_arrays(train_per_class: int, test_per_class: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 images with shuffled, exactly balanced labels 0..9."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    return arrays


FMNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture
def fake_fmnist() -> Callable[..., dict[str, np.ndarray]]:
    """Factory: write a tiny Fashion-MNIST (four IDX files) into a directory; returns the arrays."""

    def make(
        directory: Path, train_per_class: int = 20, test_per_class: int = 10, gz: bool = True, seed: int = 0
    ) -> dict[str, np.ndarray]:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = fake_fmnist_arrays(train_per_class, test_per_class, seed)
        for key, name in FMNIST_NAMES.items():
            write_idx(directory / (name + (".gz" if gz else "")), arrays[key])
        return arrays

    return make


class _Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles the way the official (Python 2) CIFAR files are: bytes as py2 ``str``
    (BINSTRING opcodes) and numpy's globals under ``numpy.core``."""

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", "")
        qualname = name or obj.__qualname__
        if module.startswith("numpy._core"):
            module = module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def dump_pickle(path: Path, content: dict, python2_style: bool) -> None:
    if python2_style:
        buffer = io.BytesIO()
        _Python2StylePickler(buffer, protocol=2).dump(content)
        path.write_bytes(buffer.getvalue())
    else:
        path.write_bytes(pickle.dumps(content, protocol=4))


CIFAR_FORMATS = {
    # name: (base_folder, train files, test files, meta file, label key, names key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        b"labels",
        b"label_names",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names", 100),
}


@pytest.fixture
def fake_cifar() -> Callable[..., dict[str, np.ndarray]]:
    """Factory: write a tiny CIFAR-10/100 in the real python-pickle layout under ``parent/<base_folder>``.

    Each training file holds ``train_per_class`` images of every class; rows are channel-major
    uint8 (N, 3072) like the official files. Returns the (N, 32, 32, 3) images and labels written.
    """

    def make(
        name: str,
        parent: Path,
        train_per_class: int = 1,
        test_per_class: int = 1,
        python2_style: bool = True,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        base_folder, train_files, test_files, meta_file, label_key, names_key, n_classes = CIFAR_FORMATS[name]
        folder = parent / base_folder
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        written: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
        for split, files, per_class in (("train", train_files, train_per_class), ("test", test_files, test_per_class)):
            for file_name in files:
                labels = rng.permutation(np.repeat(np.arange(n_classes), per_class))
                images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
                content = {
                    b"batch_label": b"fake batch",
                    label_key: labels.tolist(),
                    b"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1),
                    b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
                }
                if name == "cifar100":
                    content[b"coarse_labels"] = (labels // 5).tolist()
                dump_pickle(folder / file_name, content, python2_style)
                written[f"{split}_images"].append(images)
                written[f"{split}_labels"].append(labels)
        meta = {names_key: [f"class_{i}".encode() for i in range(n_classes)]}
        if name == "cifar10":
            meta.update({b"num_cases_per_batch": 10000, b"num_vis": 3072})
        else:
            meta[b"coarse_label_names"] = [f"super_{i}".encode() for i in range(20)]
        dump_pickle(folder / meta_file, meta, python2_style)
        return {key: np.concatenate(value) for key, value in written.items()}

    return make


# on split_digits' tiny runs (lr 0.05, one epoch of ~10 mini-batches) the default EWC penalty diverges, and
# RWalk updates no path score within delta_t=10 iterations: the runner (rightly) refuses both
SMOKE_SETS = {
    "ewc": ["strategy.ewc_lambda=10"],
    "online_ewc": ["strategy.ewc_lambda=10"],
    "rwalk": ["strategy.delta_t=2"],
}


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of `cl-bench ARGS` run in this process."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
