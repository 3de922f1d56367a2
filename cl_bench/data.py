"""Dataset preparation (`cl-bench data prepare NAME`) and the low-level readers of the on-disk formats.

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

* **Validation by decoding.** ``prepare`` decodes every file it copies and checks the format and
  the consistency between files (image and label counts agree, labels lie in ``[0, classes)``,
  images have the dataset's size) but not the exact sample counts, so the same code path runs
  on the tiny files the tests write. Downloaded Fashion-MNIST must also have the real counts
  (60000/10000); the downloaded CIFAR archive is checked against torchvision's published MD5.
  No MD5 check for local copies: the Debian package ``dataset-fashion-mnist`` (which installs
  the gzipped files under ``/usr/share/datasets/fashion-mnist``) recompressed them, so their
  MD5s differ from upstream's although the decoded contents are the same.
* **Atomic preparation.** Files are staged in a temporary directory next to the destination
  and the finished directory is renamed into place, so a failed ``prepare`` leaves nothing
  half-written (and a previous good copy stays in place).
* **Restricted unpickling of CIFAR.** CIFAR is distributed as Python pickles; they are read
  with an unpickler that only resolves the few numpy globals an array needs, so a tampered
  file cannot run code (torchvision's loader calls ``pickle.load`` unrestricted).
* **In-process cache.** Decoded arrays are cached per directory (keyed by file sizes and
  modification times), so repeated scenario builds in one process skip the decoding.
* **Image folders (ImageNet-R).** ``prepare`` decodes every image once (JPEGs at a reduced DCT
  scale, which still reads the whole file, so truncated files are caught) and needs at least two
  class folders of at least two images each (one for training, one for testing), not the real 200
  classes, so the tests run the same code on a few tiny files. Only files with torchvision's image
  extensions are taken; hidden files and folders (``.DS_Store``, macOS ``._*`` copies) are skipped;
  anything else in the tree (``README.txt``) is left behind. At run time the folders are only
  listed, not decoded. ImageNet-R is not downloaded: the archive's URL is in the error message.

Library functions print nothing; the CLI prints what ``prepare`` returns.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

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
FMNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # package dataset-fashion-mnist
FMNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FMNIST_REAL_COUNTS = {"train": 60000, "test": 10000}
FMNIST_IMAGE_SIZE = (28, 28)
FMNIST_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: fail fast where there is no network
DOWNLOAD_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException)


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
        raise UserError(f"corrupt IDX file {path}: {len(raw) - header} data bytes, expected {expected} "
                        f"for shape {shape}")
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


def _fmnist_files(directory: Path) -> dict[str, Path]:
    """The four IDX files in ``directory``; UserError naming the missing ones."""
    found = {key: find_idx_file(directory, name) for key, name in FMNIST_FILES.items()}
    missing = [FMNIST_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return found  # type: ignore[return-value]


def _decode_fmnist(files: dict[str, Path], real_counts: bool = False) -> ImageArrays:
    """Decode and cross-check the four IDX files."""
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        image_file, label_file = files[f"{split}_images"], files[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != FMNIST_IMAGE_SIZE:
            raise UserError(f"corrupt Fashion-MNIST file {image_file}: expected uint8 images of shape "
                            f"(N, 28, 28), got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise UserError(f"corrupt Fashion-MNIST file {label_file}: expected uint8 labels of shape (N,), "
                            f"got {labels.dtype} {labels.shape}")
        if len(images) != len(labels) or len(images) == 0:
            raise UserError(f"inconsistent Fashion-MNIST files: {image_file} has {len(images)} images but "
                            f"{label_file} has {len(labels)} labels")
        if labels.max() >= FMNIST_CLASSES:
            raise UserError(f"corrupt Fashion-MNIST file {label_file}: label {int(labels.max())} is not in 0..9")
        if real_counts and len(labels) != FMNIST_REAL_COUNTS[split]:
            raise UserError(f"Fashion-MNIST file {image_file} has {len(labels)} samples, expected "
                            f"{FMNIST_REAL_COUNTS[split]}")
    return ImageArrays(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                       arrays["test_images"], arrays["test_labels"].astype(np.int64))


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
        files = _fmnist_files(directory)
    except FileNotFoundError:
        raise UserError(f"Fashion-MNIST not found in {directory}; run `cl-bench data prepare fmnist` "
                        "(Debian: apt-get install dataset-fashion-mnist)") from None
    return _cached("fmnist", list(files.values()), lambda: _decode_fmnist(files))


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
    "cifar10": CifarLayout("cifar10", "CIFAR-10", "cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                           "labels", "label_names", 10, "CIFAR10"),
    "cifar100": CifarLayout("cifar100", "CIFAR-100", "cifar100", "cifar-100-python", "cifar-100-python.tar.gz",
                            ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100, "CIFAR100"),
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
        raise UserError(f"corrupt CIFAR file {path}: 'data' must be uint8 of shape (N, 3072), "
                        f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"corrupt CIFAR file {path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"corrupt CIFAR file {path}: labels must lie in 0..{num_classes - 1}")
    # rows are channel-major (1024 red, 1024 green, 1024 blue); HWC like torchvision's .data
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _cifar_files(layout: CifarLayout, folder: Path) -> list[Path]:
    names = layout.train_files + layout.test_files + (layout.meta_file,)
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return paths


def _decode_cifar(layout: CifarLayout, folder: Path) -> ImageArrays:
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
        raise UserError(f"corrupt CIFAR file {meta_path}: {layout.names_key!r} must list "
                        f"{layout.num_classes} class names")
    class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    return ImageArrays(train_images, train_labels, test_images, test_labels, class_names)


def cifar_missing_message(layout: CifarLayout, folder: Path) -> str:
    return (f"{layout.title} not found in {folder}; run `cl-bench data prepare {layout.name} --from DIR` "
            f"(DIR holding {layout.base_folder}/ or {layout.archive}), or `cl-bench data prepare "
            f"{layout.name}` to download it where a network exists")


def load_cifar(name: str, root: Path) -> ImageArrays:
    """CIFAR-10/100 from ``root/<base_folder>`` (the torchvision root), cached in-process.

    Images are uint8 (N, 32, 32, 3) in HWC order, labels int64 (fine labels for CIFAR-100).
    """
    layout = CIFAR_LAYOUTS[name]
    folder = Path(root) / layout.base_folder
    try:
        files = _cifar_files(layout, folder)
    except FileNotFoundError:
        raise UserError(cifar_missing_message(layout, folder)) from None
    return _cached(name, files, lambda: _decode_cifar(layout, folder))


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _staging_dir(root: Path, name: str) -> Iterator[Path]:
    """A temporary directory next to ``root/name``; removed unless it was moved into place."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, destination: Path) -> None:
    """Move a finished staging directory to ``destination``, replacing an old copy only on success."""
    backup = None
    if destination.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        backup.rmdir()
        destination.rename(backup)
    try:
        staging.rename(destination)
    except OSError:
        if backup is not None:
            backup.rename(destination)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _copy_file(source: Path, destination: Path) -> None:
    try:
        shutil.copyfile(source, destination)
    except OSError as error:
        raise UserError(f"cannot copy {source} to {destination}: {error.strerror or error}") from None


def _download(url: str, destination: Path) -> None:
    """Fetch ``url`` into ``destination`` (a staging path); OSError/URLError on failure."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes (``algorithm``: any hashlib name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prepare_fmnist(source: Optional[Path], root: Path, allow_download: bool) -> Path:
    destination = root / FMNIST_DIRNAME
    how_to = ("get the four IDX files (Debian: apt-get install dataset-fashion-mnist, which installs them in "
              f"{FMNIST_DEBIAN_DIR}) and run `cl-bench data prepare fmnist --from DIR`")
    if source is None:
        with contextlib.suppress(FileNotFoundError):
            _fmnist_files(destination)
            return destination  # already prepared
        if FMNIST_DEBIAN_DIR.is_dir():
            source = FMNIST_DEBIAN_DIR
    if source is not None:
        source = Path(source)
        if not source.is_dir():
            raise UserError(f"--from {source} is not a directory; {how_to}")
        try:
            files = _fmnist_files(source)
        except FileNotFoundError as missing:
            raise UserError(f"Fashion-MNIST files missing in {source}: {missing} (each may be .gz); "
                            f"{how_to}") from None
        _decode_fmnist(files)  # validate before writing anything (errors name the source files)
        with _staging_dir(root, FMNIST_DIRNAME) as staging:
            for path in files.values():
                _copy_file(path, staging / path.name)
            _install(staging, destination)
        return destination
    if not allow_download:
        raise UserError(f"Fashion-MNIST not found in {destination} and downloading is disabled; {how_to}")
    errors = []
    for base_url in FMNIST_URLS:  # mirrors, in order
        with _staging_dir(root, FMNIST_DIRNAME) as staging:
            try:
                for name in FMNIST_FILES.values():
                    _download(f"{base_url}{name}.gz", staging / f"{name}.gz")
                _decode_fmnist(_fmnist_files(staging), real_counts=True)
            except DOWNLOAD_ERRORS as error:
                errors.append(f"{base_url}: {getattr(error, 'reason', error)}")
                continue
            except UserError as error:  # a bad file from this mirror: try the next one
                errors.append(f"{base_url}: {str(error).replace(str(staging) + os.sep, '')}")
                continue
            _install(staging, destination)
            return destination
    raise UserError(f"could not download Fashion-MNIST ({'; '.join(errors)}); {how_to}")


def _copy_cifar_folder(layout: CifarLayout, folder: Path, staging: Path) -> None:
    """Copy the data/meta files of ``folder`` (a ``base_folder``) into ``staging/base_folder``."""
    try:
        files = _cifar_files(layout, folder)
    except FileNotFoundError as missing:
        raise UserError(f"{layout.title} files missing in {folder}: {missing}") from None
    _decode_cifar(layout, folder)  # validate before writing anything (errors name the source files)
    target = staging / layout.base_folder
    target.mkdir()
    for path in files:
        _copy_file(path, target / path.name)


def _extract_cifar_archive(layout: CifarLayout, archive: Path, staging: Path) -> None:
    """Extract ``base_folder`` from a CIFAR .tar.gz into ``staging`` (member paths sanitised)."""
    unpacked = staging / ".unpacked"
    unpacked.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            # filter="data" refuses absolute paths, links out of the tree and device files
            tar.extractall(unpacked, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot extract {layout.title} archive {archive}: {error}") from None
    folder = unpacked / layout.base_folder
    if not folder.is_dir():
        raise UserError(f"{layout.title} archive {archive} does not contain {layout.base_folder}/")
    try:
        _copy_cifar_folder(layout, folder, staging)
    except UserError as error:  # the unpacked path is temporary: name the archive instead
        raise UserError(f"in archive {archive}: {str(error).replace(str(unpacked) + os.sep, '')}") from None
    shutil.rmtree(unpacked)


def _prepare_cifar(name: str, source: Optional[Path], root: Path, allow_download: bool) -> Path:
    layout = CIFAR_LAYOUTS[name]
    destination = root / layout.dirname
    how_to = (f"pass --from DIR where DIR holds {layout.base_folder}/ or {layout.archive} "
              f"(from https://www.cs.toronto.edu/~kriz/cifar.html)")
    if source is None:
        with contextlib.suppress(FileNotFoundError):
            _cifar_files(layout, destination / layout.base_folder)
            return destination  # already prepared
        if not allow_download:
            raise UserError(f"{layout.title} not found in {destination} and downloading is disabled; {how_to}")
        import torchvision.datasets  # the archive's URL and MD5 as torchvision publishes them

        dataset_class = getattr(torchvision.datasets, layout.torchvision_class)
        with _staging_dir(root, layout.dirname) as staging:
            archive = staging / layout.archive
            try:
                _download(dataset_class.url, archive)
            except DOWNLOAD_ERRORS as error:
                raise UserError(f"could not download {layout.title} from {dataset_class.url} "
                                f"({getattr(error, 'reason', error)}); {how_to}") from None
            if file_digest(archive) != dataset_class.tgz_md5:
                raise UserError(f"downloaded {layout.title} archive has the wrong MD5; retry, or {how_to}")
            _extract_cifar_archive(layout, archive, staging)
            archive.unlink()
            _install(staging, destination)
        return destination

    source = Path(source)
    with _staging_dir(root, layout.dirname) as staging:
        if source.is_file():
            _extract_cifar_archive(layout, source, staging)
        elif (source / layout.base_folder).is_dir():
            _copy_cifar_folder(layout, source / layout.base_folder, staging)
        elif source.name == layout.base_folder and source.is_dir():
            _copy_cifar_folder(layout, source, staging)
        elif (source / layout.archive).is_file():
            _extract_cifar_archive(layout, source / layout.archive, staging)
        else:
            raise UserError(f"{source} holds neither {layout.base_folder}/ nor {layout.archive}; {how_to}")
        _install(staging, destination)
    return destination


# ---------------------------------------------------------------------------------------------
# ImageNet-R (an image folder: one sub-folder of images per class)
# ---------------------------------------------------------------------------------------------

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
    class_dirs = sorted((entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
                        key=lambda entry: entry.name)
    layout = f"{title} must be class folders of images (e.g. n01443537/art_0.jpg)"
    if len(class_dirs) < 2:
        raise UserError(f"{folder} holds {len(class_dirs)} class folder(s), at least 2 are needed; {layout}")
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(entry.name for entry in class_dir.iterdir()
                        if entry.is_file() and not entry.name.startswith(".")
                        and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if len(images) < MIN_IMAGES_PER_CLASS:
            raise UserError(f"class folder {class_dir} holds {len(images)} image(s), at least {MIN_IMAGES_PER_CLASS} "
                            f"are needed (one to train, one to test); {layout}")
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
    return (f"ImageNet-R not found in {folder}; run `cl-bench data prepare imagenet-r --from DIR` (DIR holding "
            f"{IMAGENET_R_DIRNAME}/ or {IMAGENET_R_ARCHIVE}, from {IMAGENET_R_URL})")


def load_imagenet_r(folder: Path) -> ImageFolderListing:
    """The prepared ImageNet-R listing of ``folder`` (``data_root()/imagenet-r``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(imagenet_r_missing_message(folder))
    return list_image_folder(folder, "ImageNet-R")


def _install_image_folder(listing: ImageFolderListing, staging: Path, move: bool) -> None:
    """Put the listed images into ``staging/<class>/`` (moved out of a temporary tree, else copied)."""
    for name in listing.class_names:
        (staging / name).mkdir()
    for path, label in zip(listing.paths, listing.labels.tolist()):
        target = staging / listing.class_names[label] / Path(path).name
        if move:
            Path(path).rename(target)
        else:
            _copy_file(Path(path), target)


def _validated_image_folder(folder: Path) -> ImageFolderListing:
    listing = list_image_folder(folder, "ImageNet-R")
    check_images_decode(listing)
    return listing


def _extract_imagenet_r(archive: Path, staging: Path) -> None:
    unpacked = staging / ".unpacked"
    unpacked.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(unpacked, filter="data")  # refuses absolute paths, links out of the tree, devices
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot extract ImageNet-R archive {archive}: {error}") from None
    folder = unpacked / IMAGENET_R_DIRNAME if (unpacked / IMAGENET_R_DIRNAME).is_dir() else unpacked
    try:
        listing = _validated_image_folder(folder)
    except UserError as error:  # the unpacked path is temporary: name the archive instead
        raise UserError(f"in archive {archive}: {str(error).replace(str(unpacked) + os.sep, '')}") from None
    _install_image_folder(listing, staging, move=True)
    shutil.rmtree(unpacked)


def _prepare_imagenet_r(source: Optional[Path], root: Path) -> Path:
    destination = root / IMAGENET_R_DIRNAME
    how_to = (f"download {IMAGENET_R_ARCHIVE} from {IMAGENET_R_URL} and run `cl-bench data prepare imagenet-r "
              f"--from DIR` (DIR holding {IMAGENET_R_DIRNAME}/ or {IMAGENET_R_ARCHIVE})")
    if source is None:
        if destination.is_dir():
            list_image_folder(destination, "ImageNet-R")  # already prepared (else: what is wrong with it)
            return destination
        raise UserError(f"ImageNet-R not found in {destination} and cl-bench does not download it; {how_to}")
    source = Path(source)
    with _staging_dir(root, IMAGENET_R_DIRNAME) as staging:
        if source.is_file():
            _extract_imagenet_r(source, staging)
        elif (source / IMAGENET_R_DIRNAME).is_dir():
            _install_image_folder(_validated_image_folder(source / IMAGENET_R_DIRNAME), staging, move=False)
        elif (source / IMAGENET_R_ARCHIVE).is_file():
            _extract_imagenet_r(source / IMAGENET_R_ARCHIVE, staging)
        elif source.is_dir():
            _install_image_folder(_validated_image_folder(source), staging, move=False)
        else:
            raise UserError(f"--from {source} does not exist; {how_to}")
        _install(staging, destination)
    return destination


def prepare(dataset: str, source: Optional[Path], root: Path, allow_download: bool = True) -> Path:
    """Put ``dataset`` under ``root`` in the layout the scenarios read, and return its directory.

    ``fmnist``: copy the four IDX files from ``source``; with no source, keep an existing prepared
    copy, else copy from the Debian package's /usr/share/datasets/fashion-mnist when present,
    else download from the standard URLs (when ``allow_download``). ``cifar10``/``cifar100``: copy
    from ``source`` (a directory holding the extracted ``cifar-10-batches-py``/``cifar-100-python``
    folder, that folder itself, or the ``.tar.gz`` archive or a directory holding it); with no
    source, keep an existing copy, else download torchvision's archive (when ``allow_download``).
    ``imagenet-r``: copy the class folders from ``source`` (a directory holding ``imagenet-r/``, that
    folder itself, or ``imagenet-r.tar`` or a directory holding it); with no source, keep an existing
    copy (never downloaded).
    Every file is validated by decoding; nothing is left half-written on failure.
    """
    root = Path(root)
    if dataset == "fmnist":
        return _prepare_fmnist(source, root, allow_download)
    if dataset in CIFAR_LAYOUTS:
        return _prepare_cifar(dataset, source, root, allow_download)
    if dataset == "imagenet-r":
        return _prepare_imagenet_r(source, root)
    raise UserError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


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
