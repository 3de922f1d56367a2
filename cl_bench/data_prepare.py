"""Dataset preparation: ``cl-bench data prepare NAME`` puts a dataset where :mod:`cl_bench.data` reads it.

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
* **Image folders (ImageNet-R).** ``prepare`` decodes every image once (JPEGs at a reduced DCT
  scale, which still reads the whole file, so truncated files are caught) and needs at least two
  class folders of at least two images each (one for training, one for testing), not the real 200
  classes, so the tests run the same code on a few tiny files. Anything that is not an image in the tree
  (``README.txt``) is left behind. ImageNet-R is not downloaded: the archive's URL is in the error message.

Library functions print nothing; the CLI prints what ``prepare`` returns.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator, Optional

from cl_bench.data import (
    CIFAR_LAYOUTS,
    DATASETS,
    FMNIST_DIRNAME,
    FMNIST_FILES,
    IMAGENET_R_ARCHIVE,
    IMAGENET_R_DIRNAME,
    IMAGENET_R_URL,
    CifarLayout,
    ImageFolderListing,
    cifar_files,
    decode_cifar,
    decode_fmnist,
    fmnist_files,
    check_images_decode,
    file_digest,
    list_image_folder,
)
from cl_bench.errors import UserError
from cl_bench.records import install_directory

FMNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # package dataset-fashion-mnist
FMNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: fail fast where there is no network
DOWNLOAD_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException)


@contextlib.contextmanager
def _staging_dir(root: Path, name: str) -> Iterator[Path]:
    """A temporary directory next to ``root/name``; removed unless it was moved into place."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_file(source: Path, destination: Path) -> None:
    try:
        shutil.copyfile(source, destination)
    except OSError as error:
        raise UserError(f"cannot copy {source} to {destination}: {error.strerror or error}") from None


def _download(url: str, destination: Path) -> None:
    """Fetch ``url`` into ``destination`` (a staging path); OSError/URLError on failure."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _prepare_fmnist(source: Optional[Path], root: Path, allow_download: bool) -> Path:
    destination = root / FMNIST_DIRNAME
    how_to = (
        "get the four IDX files (Debian: apt-get install dataset-fashion-mnist, which installs them in "
        f"{FMNIST_DEBIAN_DIR}) and run `cl-bench data prepare fmnist --from DIR`"
    )
    if source is None:
        with contextlib.suppress(FileNotFoundError):
            fmnist_files(destination)
            return destination  # already prepared
        if FMNIST_DEBIAN_DIR.is_dir():
            source = FMNIST_DEBIAN_DIR
    if source is not None:
        source = Path(source)
        if not source.is_dir():
            raise UserError(f"--from {source} is not a directory; {how_to}")
        try:
            files = fmnist_files(source)
        except FileNotFoundError as missing:
            raise UserError(f"Fashion-MNIST files missing in {source}: {missing} (each may be .gz); {how_to}") from None
        decode_fmnist(files)  # validate before writing anything (errors name the source files)
        with _staging_dir(root, FMNIST_DIRNAME) as staging:
            for path in files.values():
                _copy_file(path, staging / path.name)
            install_directory(staging, destination)
        return destination
    if not allow_download:
        raise UserError(f"Fashion-MNIST not found in {destination} and downloading is disabled; {how_to}")
    errors = []
    for base_url in FMNIST_URLS:  # mirrors, in order
        with _staging_dir(root, FMNIST_DIRNAME) as staging:
            try:
                for name in FMNIST_FILES.values():
                    _download(f"{base_url}{name}.gz", staging / f"{name}.gz")
                decode_fmnist(fmnist_files(staging), real_counts=True)
            except DOWNLOAD_ERRORS as error:
                errors.append(f"{base_url}: {getattr(error, 'reason', error)}")
                continue
            except UserError as error:  # a bad file from this mirror: try the next one
                errors.append(f"{base_url}: {str(error).replace(str(staging) + os.sep, '')}")
                continue
            install_directory(staging, destination)
            return destination
    raise UserError(f"could not download Fashion-MNIST ({'; '.join(errors)}); {how_to}")


def _copy_cifar_folder(layout: CifarLayout, folder: Path, staging: Path) -> None:
    """Copy the data/meta files of ``folder`` (a ``base_folder``) into ``staging/base_folder``."""
    try:
        files = cifar_files(layout, folder)
    except FileNotFoundError as missing:
        raise UserError(f"{layout.title} files missing in {folder}: {missing}") from None
    decode_cifar(layout, folder)  # validate before writing anything (errors name the source files)
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
    how_to = (
        f"pass --from DIR where DIR holds {layout.base_folder}/ or {layout.archive} "
        f"(from https://www.cs.toronto.edu/~kriz/cifar.html)"
    )
    if source is None:
        with contextlib.suppress(FileNotFoundError):
            cifar_files(layout, destination / layout.base_folder)
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
                raise UserError(
                    f"could not download {layout.title} from {dataset_class.url} "
                    f"({getattr(error, 'reason', error)}); {how_to}"
                ) from None
            if file_digest(archive) != dataset_class.tgz_md5:
                raise UserError(f"downloaded {layout.title} archive has the wrong MD5; retry, or {how_to}")
            _extract_cifar_archive(layout, archive, staging)
            archive.unlink()
            install_directory(staging, destination)
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
        install_directory(staging, destination)
    return destination


# ---------------------------------------------------------------------------------------------
# ImageNet-R (an image folder: one sub-folder of images per class)
# ---------------------------------------------------------------------------------------------


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
    how_to = (
        f"download {IMAGENET_R_ARCHIVE} from {IMAGENET_R_URL} and run `cl-bench data prepare imagenet-r "
        f"--from DIR` (DIR holding {IMAGENET_R_DIRNAME}/ or {IMAGENET_R_ARCHIVE})"
    )
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
        install_directory(staging, destination)
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
