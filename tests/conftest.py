"""Shared pytest fixtures: tiny datasets written in the real on-disk formats, and the components' smoke runs."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from PIL import Image

from cl_bench.cli import main
from cl_bench.data import CIFAR_LAYOUTS, FMNIST_DIRNAME, IMAGENET_R_DIRNAME


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


def write_fake_fmnist(
    directory: Path, train_per_class: int = 20, test_per_class: int = 10, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write a tiny Fashion-MNIST (four IDX files) into ``directory``; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = fake_fmnist_arrays(train_per_class, test_per_class, seed)
    for key, name in FMNIST_NAMES.items():
        write_idx(directory / (name + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.fixture
def fake_fmnist() -> Callable[..., dict[str, np.ndarray]]:
    """Factory: write a tiny Fashion-MNIST (four IDX files) into a directory; returns the arrays."""
    return write_fake_fmnist


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


def write_fake_cifar(
    name: str,
    parent: Path,
    train_per_class: int = 1,
    test_per_class: int = 1,
    python2_style: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR-10/100 in the real python-pickle layout under ``parent/<base_folder>``.

    Each training file holds ``train_per_class`` images of every class; rows are channel-major
    uint8 (N, 3072) like the official files. Returns the (N, 32, 32, 3) images and labels written.
    """
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


@pytest.fixture
def fake_cifar() -> Callable[..., dict[str, np.ndarray]]:
    """Factory: :func:`write_fake_cifar`."""
    return write_fake_cifar


WNIDS = ["n01443537", "n01484850", "n01494475", "n01498041"]


def write_image_tree(folder: Path, per_class: int = 6, classes=WNIDS, fmt: str = "JPEG", seed: int = 0) -> None:
    """Class folders of tiny random RGB images of varied sizes, plus the clutter a real copy may hold."""
    rng = np.random.default_rng(seed)
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    for wnid in classes:
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = (int(v) for v in rng.integers(12, 40, size=2))
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / wnid / f"art_{index}{suffix}", fmt)
        (folder / wnid / ".DS_Store").write_bytes(b"\0\1")
    (folder / "README.txt").write_text("ImageNet-R\n")


# ----------------------------------------------------------------------------- smoke runs


def _tiny_imagenet_r(root: Path) -> None:
    from cl_bench.data_prepare import prepare

    source = root.parent / "imagenet-r-source"
    write_image_tree(source / IMAGENET_R_DIRNAME)
    prepare("imagenet-r", source, root)


# what a scenario's `requires_data` names -> a writer of a tiny copy under a data root, in the layout the scenarios
# read: a smoke run never needs the real files (and lasts seconds); a dataset without one is smoke-tested only
# where it is prepared
TINY_DATASETS: dict[str, Callable[[Path], object]] = {
    # 24 training images per class: 20 left in the task-free stream once the pre-training pool (1/6) is held out
    "fmnist": lambda root: write_fake_fmnist(root / FMNIST_DIRNAME, train_per_class=24, test_per_class=6),
    "cifar10": lambda root: write_fake_cifar("cifar10", root / CIFAR_LAYOUTS["cifar10"].dirname),
    "cifar100": lambda root: write_fake_cifar(
        "cifar100", root / CIFAR_LAYOUTS["cifar100"].dirname, train_per_class=2, test_per_class=1
    ),
    "imagenet-r": _tiny_imagenet_r,
}


def smoke_settings(kind: str, name: str) -> tuple[dict, list[str]]:
    """(flags, --set list) of the smoke run of the ``kind`` component ``name``: the component named, the choices
    (``scenario=...``) and ``--set`` assignments of its declared ``smoke`` settings, on the CPU."""
    from cl_bench.registry import REGISTRIES

    flags: dict = {}
    sets: list[str] = []
    for setting in REGISTRIES[kind].traits(name).smoke:
        key, value = setting.split("=", 1)
        if "." in key:
            sets.append(setting)
        else:
            flags[key] = value
    flags.update({kind: name, "device": "cpu"})  # the component under test, whatever its settings name
    return flags, sets


def smoke_data_root(scenario: str, tmp_path: Path) -> Optional[Path]:
    """The data root a smoke run of ``scenario`` reads: None for a scenario without files, a tiny copy of its
    ``requires_data`` under ``tmp_path`` where :data:`TINY_DATASETS` has a writer, else the prepared real copy
    (the test is skipped where it is not prepared)."""
    from cl_bench.registry import SCENARIOS
    from cl_bench.scenario import data_root

    dataset = SCENARIOS.card(scenario).meta.get("requires_data")
    if not dataset:
        return None
    if dataset in TINY_DATASETS:
        root = tmp_path / "data"
        if not root.is_dir():
            TINY_DATASETS[dataset](root)
        return root
    if not (data_root() / dataset).exists():
        pytest.skip(f"{scenario} needs {dataset}, which has no tiny stand-in and is not prepared in {data_root()}")
    return data_root()


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of `cl-bench ARGS` run in this process."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


REPOSITORY = Path(__file__).resolve().parent.parent


def analysis_script(name: str):
    """The module ``analysis/<name>.py`` (the scripts that build the method pages' tables), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPOSITORY / "analysis" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_block(page: str, marker: str) -> str:
    """The text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of a Markdown page."""
    return page.split(f"<!-- {marker}:start -->\n")[1].split(f"\n<!-- {marker}:end -->")[0]
