"""The readers of the on-disk dataset formats, used at run time (preparation: :mod:`cl_bench.data_prepare`).

Datasets live under :func:`cl_bench.scenario.data_root` (``$CL_BENCH_DATA``, else
``~/.cache/cl_bench/data``), one directory per dataset:

* ``fashion-mnist/``: the four Fashion-MNIST IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each
  gzipped (``.gz``) or plain, exactly as distributed.
* ``cifar10/cifar-10-batches-py/`` and ``cifar100/cifar-100-python/``: the standard CIFAR
  "python version" pickles, i.e. the layout ``torchvision.datasets.CIFAR10/CIFAR100(root=...)``
  expects, so the same directory also works with torchvision directly.
* ``imagenet-r/<class>/<image>``: ImageNet-R (Hendrycks et al. 2021, 200 classes named by ImageNet
  wnid, ~30k JPEGs) as its ``imagenet-r.tar`` unpacks, i.e. the ``torchvision.datasets.ImageFolder``
  layout: class label = position of the folder name in sorted order, images ordered by file name.

Suite choices:

* **Restricted unpickling of CIFAR.** CIFAR is distributed as Python pickles; they are read
  with an unpickler that only resolves the few numpy globals an array needs, so a tampered
  file cannot run code (torchvision's loader calls ``pickle.load`` unrestricted).
* **In-process cache.** Decoded arrays are cached per directory (keyed by file sizes and
  modification times), so repeated scenario builds in one process skip the decoding.
* **Image folders (ImageNet-R)** are only listed at run time, not decoded; only files with torchvision's
  image extensions are taken, hidden files and folders (``.DS_Store``, macOS ``._*`` copies) are skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cl_bench.errors import UserError

DATASETS = ("fmnist", "cifar10", "cifar100", "imagenet-r")

# ---------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST)
# ---------------------------------------------------------------------------------------------

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FMNIST_DIRNAME = "fashion-mnist"
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FMNIST_REAL_COUNTS = {"train": 60000, "test": 10000}
FMNIST_IMAGE_SIZE = (28, 28)
FMNIST_CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (gzipped or plain) into an array of its declared type and shape.

    The magic number is ``0x00 0x00 TYPE NDIM`` followed by NDIM big-endian uint32 dimensions;
    anything else, or a payload of the wrong size, is a UserError naming the file.
    """
    path = Path(path)
    try:
        raw = _read_maybe_gzip(path)
    except FileNotFoundError:
        raise UserError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"corrupt IDX file {path}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(f"corrupt IDX file {path}: bad magic number {raw[:4].hex() or '(empty)'}")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"corrupt IDX file {path}: truncated header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(
            f"corrupt IDX file {path}: {len(raw) - header} data bytes, expected {expected} for shape {shape}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head == b"\x1f\x8b":  # gzip magic, whatever the file is called
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def find_idx_file(directory: Path, name: str) -> Optional[Path]:
    """``directory/name.gz`` or ``directory/name``, whichever exists (gzipped first)."""
    for candidate in (Path(directory) / f"{name}.gz", Path(directory) / name):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class ImageArrays:
    """A decoded image dataset: uint8 images (N, H, W) or (N, H, W, C), int64 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...] = ()


def fmnist_files(directory: Path) -> dict[str, Path]:
    """The four IDX files in ``directory``; UserError naming the missing ones."""
    found = {key: find_idx_file(directory, name) for key, name in FMNIST_FILES.items()}
    missing = [FMNIST_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return found  # type: ignore[return-value]


def decode_fmnist(files: dict[str, Path], real_counts: bool = False) -> ImageArrays:
    """Decode and cross-check the four IDX files."""
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        image_file, label_file = files[f"{split}_images"], files[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != FMNIST_IMAGE_SIZE:
            raise UserError(
                f"corrupt Fashion-MNIST file {image_file}: expected uint8 images of shape "
                f"(N, 28, 28), got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise UserError(
                f"corrupt Fashion-MNIST file {label_file}: expected uint8 labels of shape (N,), "
                f"got {labels.dtype} {labels.shape}"
            )
        if len(images) != len(labels) or len(images) == 0:
            raise UserError(
                f"inconsistent Fashion-MNIST files: {image_file} has {len(images)} images but "
                f"{label_file} has {len(labels)} labels"
            )
        if labels.max() >= FMNIST_CLASSES:
            raise UserError(f"corrupt Fashion-MNIST file {label_file}: label {int(labels.max())} is not in 0..9")
        if real_counts and len(labels) != FMNIST_REAL_COUNTS[split]:
            raise UserError(
                f"Fashion-MNIST file {image_file} has {len(labels)} samples, expected {FMNIST_REAL_COUNTS[split]}"
            )
    return ImageArrays(
        arrays["train_images"],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"],
        arrays["test_labels"].astype(np.int64),
    )


_CACHE: dict[str, tuple[tuple, ImageArrays]] = {}


def _cached(kind: str, files: list[Path], decode: Callable[[], ImageArrays]) -> ImageArrays:
    """Decode once per process; re-decode when any file's size or mtime changes.

    One entry per dataset kind, so tests that build from many temporary directories do not
    accumulate copies.
    """
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    hit = _CACHE.get(kind)
    if hit is not None and hit[0] == key:
        return hit[1]
    arrays = decode()
    for array in (arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels):
        array.flags.writeable = False  # shared between builds: nobody may modify them
    _CACHE[kind] = (key, arrays)
    return arrays


def load_fmnist(directory: Path) -> ImageArrays:
    """Fashion-MNIST from ``directory`` (uint8 images (N, 28, 28), int64 labels), cached in-process."""
    directory = Path(directory)
    try:
        files = fmnist_files(directory)
    except FileNotFoundError:
        raise UserError(
            f"Fashion-MNIST not found in {directory}; run `cl-bench data prepare fmnist` "
            "(Debian: apt-get install dataset-fashion-mnist)"
        ) from None
    return _cached("fmnist", list(files.values()), lambda: decode_fmnist(files))


# ---------------------------------------------------------------------------------------------
# CIFAR (python pickle version)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant lives and how its pickles are keyed (same as torchvision's class)."""

    name: str
    title: str
    dirname: str  # under data_root(); the torchvision `root`
    base_folder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    torchvision_class: str


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar10",
        "CIFAR-10",
        "cifar10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
        "CIFAR10",
    ),
    "cifar100": CifarLayout(
        "cifar100",
        "CIFAR-100",
        "cifar100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
        "CIFAR100",
    ),
}
CIFAR_PIXELS = 3 * 32 * 32


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray._reconstruct


def _numpy_frombuffer() -> Any:
    try:
        from numpy._core import numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric  # type: ignore[no-redef]
    return numeric._frombuffer  # type: ignore[attr-defined]  # private numpy function, absent from its stubs


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only what a pickled dict of numpy arrays, lists and strings needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes under protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return resolve()


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys (bytes keys of Python-3 pickles are decoded)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # latin1: the official files are Python-2 pickles whose str payloads are raw bytes
            content = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"CIFAR file {path} does not exist") from None
    except Exception as error:  # any unpickling failure means the file is not a CIFAR pickle
        raise UserError(f"corrupt CIFAR file {path}: {type(error).__name__}: {error}") from None
    if not isinstance(content, dict):
        raise UserError(f"corrupt CIFAR file {path}: expected a pickled dict, got {type(content).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR data file as (uint8 images (N, 32, 32, 3) HWC, int64 labels (N,)), format-checked."""
    content = read_cifar_pickle(path)
    if "data" not in content or label_key not in content:
        raise UserError(f"corrupt CIFAR file {path}: missing key 'data' or {label_key!r}")
    data = np.asarray(content["data"])
    labels = np.asarray(content[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise UserError(
            f"corrupt CIFAR file {path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"corrupt CIFAR file {path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"corrupt CIFAR file {path}: labels must lie in 0..{num_classes - 1}")
    # rows are channel-major (1024 red, 1024 green, 1024 blue); HWC like torchvision's .data
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def cifar_files(layout: CifarLayout, folder: Path) -> list[Path]:
    """The batch files of ``layout`` in ``folder``; FileNotFoundError naming the missing ones."""
    names = layout.train_files + layout.test_files + (layout.meta_file,)
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return paths


def decode_cifar(layout: CifarLayout, folder: Path) -> ImageArrays:
    """Decode and cross-check a CIFAR-10/100 batch folder (the pickles read by the restricted reader)."""

    def concat(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [read_cifar_batch(folder / name, layout.label_key, layout.num_classes) for name in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    train_images, train_labels = concat(layout.train_files)
    test_images, test_labels = concat(layout.test_files)
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise UserError(f"{layout.title} in {folder} has no training or no test images")
    meta_path = folder / layout.meta_file
    meta = read_cifar_pickle(meta_path)
    names = meta.get(layout.names_key)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise UserError(
            f"corrupt CIFAR file {meta_path}: {layout.names_key!r} must list {layout.num_classes} class names"
        )
    class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    return ImageArrays(train_images, train_labels, test_images, test_labels, class_names)


def cifar_missing_message(layout: CifarLayout, folder: Path) -> str:
    return (
        f"{layout.title} not found in {folder}; run `cl-bench data prepare {layout.name} --from DIR` "
        f"(DIR holding {layout.base_folder}/ or {layout.archive}), or `cl-bench data prepare "
        f"{layout.name}` to download it where a network exists"
    )


def load_cifar(name: str, root: Path) -> ImageArrays:
    """CIFAR-10/100 from ``root/<base_folder>`` (the torchvision root), cached in-process.

    Images are uint8 (N, 32, 32, 3) in HWC order, labels int64 (fine labels for CIFAR-100).
    """
    layout = CIFAR_LAYOUTS[name]
    folder = Path(root) / layout.base_folder
    try:
        files = cifar_files(layout, folder)
    except FileNotFoundError:
        raise UserError(cifar_missing_message(layout, folder)) from None
    return _cached(name, files, lambda: decode_cifar(layout, folder))


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes (``algorithm``: any hashlib name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


IMAGENET_R_DIRNAME = "imagenet-r"
IMAGENET_R_ARCHIVE = "imagenet-r.tar"
IMAGENET_R_URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
MIN_IMAGES_PER_CLASS = 2  # one to train on, one to test on
DECODE_CHECK_SIZE = (64, 64)  # JPEGs are validated at the smallest DCT scale that is at least this large
# the extensions torchvision's ImageFolder accepts (its IMG_EXTENSIONS, which a test compares; not imported
# here because importing torchvision costs seconds)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolderListing:
    """The images of a class-folder tree (not decoded): label = position of the folder in ``class_names``."""

    root: Path
    class_names: tuple[str, ...]  # sorted folder names
    paths: tuple[str, ...]  # grouped by class, sorted by file name inside a class
    labels: np.ndarray  # int64, one per path


def list_image_folder(folder: Path, title: str) -> ImageFolderListing:
    """The class folders of ``folder`` and their image files, by extension (nothing is decoded).

    A UserError (one line) unless there are at least two class folders, each with at least
    ``MIN_IMAGES_PER_CLASS`` images. Hidden files and folders are skipped.
    """
    folder = Path(folder)
    class_dirs = sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    layout = f"{title} must be class folders of images (e.g. n01443537/art_0.jpg)"
    if len(class_dirs) < 2:
        raise UserError(f"{folder} holds {len(class_dirs)} class folder(s), at least 2 are needed; {layout}")
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(
            entry.name
            for entry in class_dir.iterdir()
            if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if len(images) < MIN_IMAGES_PER_CLASS:
            raise UserError(
                f"class folder {class_dir} holds {len(images)} image(s), at least {MIN_IMAGES_PER_CLASS} "
                f"are needed (one to train, one to test); {layout}"
            )
        paths.extend(str(class_dir / name) for name in images)
        labels.extend([label] * len(images))
    return ImageFolderListing(folder, tuple(d.name for d in class_dirs), tuple(paths), np.asarray(labels, np.int64))


def check_images_decode(listing: ImageFolderListing) -> None:
    """Decode every image of ``listing``; a one-line UserError naming the first file that fails."""
    from PIL import Image

    for path in listing.paths:
        try:
            with Image.open(path) as image:
                image.draft("RGB", DECODE_CHECK_SIZE)  # JPEG only: decode at a reduced scale (all data still read)
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise UserError(f"corrupt image {path}: {reason}") from None


def imagenet_r_missing_message(folder: Path) -> str:
    return (
        f"ImageNet-R not found in {folder}; run `cl-bench data prepare imagenet-r --from DIR` (DIR holding "
        f"{IMAGENET_R_DIRNAME}/ or {IMAGENET_R_ARCHIVE}, from {IMAGENET_R_URL})"
    )


def load_imagenet_r(folder: Path) -> ImageFolderListing:
    """The prepared ImageNet-R listing of ``folder`` (``data_root()/imagenet-r``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(imagenet_r_missing_message(folder))
    return list_image_folder(folder, "ImageNet-R")


def fmnist_dir() -> Path:
    """Where split_fmnist reads Fashion-MNIST: ``data_root()/fashion-mnist``."""
    from cl_bench.scenario import data_root

    return data_root() / FMNIST_DIRNAME


def cifar_root(name: str) -> Path:
    """The torchvision ``root`` of CIFAR-10/100: ``data_root()/cifar10`` or ``data_root()/cifar100``."""
    from cl_bench.scenario import data_root

    return data_root() / CIFAR_LAYOUTS[name].dirname


def imagenet_r_dir() -> Path:
    """Where the ImageNet-R scenarios read the class folders: ``data_root()/imagenet-r``."""
    from cl_bench.scenario import data_root

    return data_root() / IMAGENET_R_DIRNAME
