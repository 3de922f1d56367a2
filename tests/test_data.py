"""Dataset preparation and readers (cl_bench.data) on tiny files in the real on-disk formats."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from cl_bench import data
from cl_bench import data_prepare
from cl_bench.data import load_cifar, load_fmnist, read_cifar_batch, read_idx
from cl_bench.data_prepare import prepare
from cl_bench.errors import UserError

FMNIST_NAMES = data.FMNIST_FILES


def write_idx(path: Path, array: np.ndarray) -> Path:
    """A uint8 IDX file (gzipped for a .gz name), as the conftest's fake_fmnist writes them."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted (hidden staging leftovers included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(autouse=True)
def no_debian_copy(monkeypatch, tmp_path):
    """Tests must not depend on whether the Debian package is installed on this machine."""
    monkeypatch.setattr(data_prepare, "FMNIST_DEBIAN_DIR", tmp_path / "no-debian-package")


def closed_port_url() -> str:
    """An http URL nothing listens on (connection refused at once, no network needed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over a directory: (directory, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, array)), array)


def test_read_idx_other_types(tmp_path):
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + np.array([2, 2], dtype=">u4").tobytes() + values.tobytes())
    decoded = read_idx(path)
    assert decoded.dtype == np.int32 and decoded.tolist() == [[1, -2], [300, 4]]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "bad magic"),
        (b"\x01\x00\x08\x01" + (2).to_bytes(4, "big") + b"ab", "bad magic"),
        (b"\x00\x00\x07\x01" + (2).to_bytes(4, "big") + b"ab", "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "3 data bytes, expected 5"),
    ],
)
def test_read_idx_corrupt(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_read_idx_corrupt_gzip_and_missing(tmp_path):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))[:-12])
    with pytest.raises(UserError, match="corrupt IDX file") as error:
        read_idx(path)
    assert str(path) in str(error.value)
    with pytest.raises(UserError, match="does not exist"):
        read_idx(tmp_path / "nothing-here")


# ---------------------------------------------------------------------------------------------
# prepare("fmnist")
# ---------------------------------------------------------------------------------------------


def test_prepare_fmnist_from_directory(tmp_path, fake_fmnist):
    source = tmp_path / "source"
    written = fake_fmnist(source, gz=True)
    # mixed compression is fine: one file plain
    plain = source / FMNIST_NAMES["test_labels"]
    plain.write_bytes(gzip.decompress((source / (plain.name + ".gz")).read_bytes()))
    (source / (plain.name + ".gz")).unlink()
    root = tmp_path / "root"
    prepared = prepare("fmnist", source=source, root=root)
    assert prepared == root / "fashion-mnist"
    assert tree(root) == ["fashion-mnist"] + sorted(
        f"fashion-mnist/{name}" + ("" if key == "test_labels" else ".gz") for key, name in FMNIST_NAMES.items()
    )
    arrays = load_fmnist(prepared)
    for key in FMNIST_NAMES:
        assert np.array_equal(getattr(arrays, key), written[key])
    assert arrays.train_images.shape == (200, 28, 28) and arrays.train_labels.dtype == np.int64
    # prepared again from nothing: the existing copy is kept
    assert prepare("fmnist", source=None, root=root, allow_download=False) == prepared


def test_prepare_fmnist_corrupt_leaves_nothing(tmp_path, fake_fmnist):
    source = tmp_path / "source"
    fake_fmnist(source)
    corrupt = source / (FMNIST_NAMES["train_images"] + ".gz")
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UserError, match="corrupt IDX file") as error:
        prepare("fmnist", source=source, root=root)
    assert str(corrupt) in str(error.value)
    assert tree(root) == []


def test_prepare_fmnist_failure_keeps_previous_copy(tmp_path, fake_fmnist):
    good, bad, root = tmp_path / "good", tmp_path / "bad", tmp_path / "root"
    written = fake_fmnist(good)
    prepare("fmnist", source=good, root=root)
    before = tree(root)
    fake_fmnist(bad, train_per_class=3)
    write_idx(bad / (FMNIST_NAMES["train_labels"] + ".gz"), np.zeros(7, dtype=np.uint8))  # 30 images, 7 labels
    with pytest.raises(UserError, match="inconsistent Fashion-MNIST files"):
        prepare("fmnist", source=bad, root=root)
    assert tree(root) == before
    assert np.array_equal(load_fmnist(root / "fashion-mnist").train_labels, written["train_labels"])


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / (FMNIST_NAMES["test_images"] + ".gz")).unlink(), "missing in .*t10k-images-idx3-ubyte"),
        (lambda d: write_idx(d / (FMNIST_NAMES["train_labels"] + ".gz"), np.full(200, 10, np.uint8)), "not in 0..9"),
        (
            lambda d: write_idx(d / (FMNIST_NAMES["test_images"] + ".gz"), np.zeros((100, 8, 8), np.uint8)),
            r"\(N, 28, 28\)",
        ),
    ],
)
def test_prepare_fmnist_invalid_sources(tmp_path, fake_fmnist, break_it, message):
    source, root = tmp_path / "source", tmp_path / "root"
    fake_fmnist(source)
    break_it(source)
    with pytest.raises(UserError, match=message):
        prepare("fmnist", source=source, root=root)
    assert tree(root) == []


def test_prepare_fmnist_source_not_a_directory(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        prepare("fmnist", source=tmp_path / "missing", root=tmp_path / "root")


def test_prepare_fmnist_uses_debian_directory(tmp_path, fake_fmnist, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    written = fake_fmnist(debian)
    monkeypatch.setattr(data_prepare, "FMNIST_DEBIAN_DIR", debian)
    prepared = prepare("fmnist", source=None, root=tmp_path / "root", allow_download=False)
    assert np.array_equal(load_fmnist(prepared).test_images, written["test_images"])


def test_prepare_fmnist_no_source_no_download(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(UserError) as error:
        prepare("fmnist", source=None, root=root, allow_download=False)
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--from DIR" in message
    assert "\n" not in message and tree(root) == []


def test_prepare_fmnist_download_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(data_prepare, "FMNIST_URLS", (closed_port_url(),))
    root = tmp_path / "root"
    with pytest.raises(UserError, match="could not download Fashion-MNIST") as error:
        prepare("fmnist", source=None, root=root)
    assert "cl-bench data prepare fmnist --from DIR" in str(error.value)
    assert tree(root) == []


def test_prepare_fmnist_download(tmp_path, monkeypatch, fake_fmnist, file_server):
    served, url = file_server
    written = fake_fmnist(served, train_per_class=3, test_per_class=2)
    monkeypatch.setattr(data_prepare, "FMNIST_URLS", (closed_port_url(), url))  # first mirror down, second works
    monkeypatch.setattr(data, "FMNIST_REAL_COUNTS", {"train": 30, "test": 20})
    prepared = prepare("fmnist", source=None, root=tmp_path / "root")
    assert np.array_equal(load_fmnist(prepared).train_images, written["train_images"])
    assert not [p for p in tree(tmp_path / "root") if ".tmp-" in p]


def test_prepare_fmnist_download_checks_real_counts(tmp_path, monkeypatch, fake_fmnist, file_server):
    served, url = file_server
    fake_fmnist(served, train_per_class=3, test_per_class=2)
    monkeypatch.setattr(data_prepare, "FMNIST_URLS", (url,))
    with pytest.raises(UserError, match="could not download Fashion-MNIST .*has 30 samples, expected 60000") as error:
        prepare("fmnist", source=None, root=tmp_path / "root")
    assert ".tmp-" not in str(error.value)  # names the file, not the temporary directory
    assert tree(tmp_path / "root") == []


def test_prepare_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist'; valid: fmnist, cifar10, cifar100"):
        prepare("mnist", source=None, root=tmp_path)


def test_load_fmnist_cache_follows_file_changes(tmp_path, fake_fmnist):
    fake_fmnist(tmp_path, seed=0)
    first = load_fmnist(tmp_path)
    assert load_fmnist(tmp_path) is first  # cached
    assert not first.train_images.flags.writeable
    replaced = fake_fmnist(tmp_path, train_per_class=21, seed=1)
    assert np.array_equal(load_fmnist(tmp_path).train_labels, replaced["train_labels"])


# ---------------------------------------------------------------------------------------------
# CIFAR readers and prepare("cifar10" / "cifar100")
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("python2_style", [True, False])
def test_read_cifar_batch(tmp_path, fake_cifar, python2_style):
    written = fake_cifar("cifar10", tmp_path, train_per_class=1, test_per_class=2, python2_style=python2_style)
    images, labels = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", "labels", 10)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images, written["test_images"]) and np.array_equal(labels, written["test_labels"])
    arrays = load_cifar("cifar10", tmp_path)
    assert arrays.train_images.shape == (50, 32, 32, 3) and arrays.class_names[3] == "class_3"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_read_cifar_refuses_code_in_pickles(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Exploit()]}))
    with pytest.raises(UserError, match="not allowed") as error:
        read_cifar_batch(path, "labels", 10)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels of shape"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, "0..9"),
        ({b"labels": [0]}, "missing key"),
    ],
)
def test_read_cifar_batch_format_errors(tmp_path, content, message):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(UserError, match=message):
        read_cifar_batch(path, "labels", 10)


def test_read_cifar_not_a_pickle(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match="corrupt CIFAR file"):
        read_cifar_batch(path, "labels", 10)


def make_archive(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("how", ["parent", "folder", "archive", "archive_in_dir"])
def test_prepare_cifar(tmp_path, fake_cifar, name, how):
    source = tmp_path / "source"
    written = fake_cifar(name, source)
    base_folder = data.CIFAR_LAYOUTS[name].base_folder
    if how == "folder":
        source = source / base_folder
    elif how.startswith("archive"):
        archive = make_archive(source / base_folder, tmp_path / data.CIFAR_LAYOUTS[name].archive)
        source = archive if how == "archive" else archive.parent
    root = tmp_path / "root"
    prepared = prepare(name, source=source, root=root)
    assert prepared == root / name
    expected_files = (
        data.CIFAR_LAYOUTS[name].train_files
        + data.CIFAR_LAYOUTS[name].test_files
        + (data.CIFAR_LAYOUTS[name].meta_file,)
    )
    assert tree(root) == sorted([name, f"{name}/{base_folder}"] + [f"{name}/{base_folder}/{f}" for f in expected_files])
    arrays = load_cifar(name, prepared)
    assert np.array_equal(arrays.train_images, written["train_images"])
    assert np.array_equal(arrays.test_labels, written["test_labels"])
    assert prepare(name, source=None, root=root, allow_download=False) == prepared  # already there


def test_prepare_cifar_corrupt_leaves_nothing(tmp_path, fake_cifar):
    source = tmp_path / "source"
    fake_cifar("cifar10", source)
    (source / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    root = tmp_path / "root"
    with pytest.raises(UserError, match="data_batch_3"):
        prepare("cifar10", source=source, root=root)
    assert tree(root) == []
    archive = make_archive(source / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(UserError, match="in archive .*cifar-10-python.tar.gz: corrupt CIFAR file cifar-10-batches-py/"):
        prepare("cifar10", source=archive, root=root)
    assert tree(root) == []


def test_prepare_cifar_bad_sources(tmp_path, fake_cifar):
    root = tmp_path / "root"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither cifar-10-batches-py/ nor cifar-10-python.tar.gz"):
        prepare("cifar10", source=empty, root=root)
    fake_cifar("cifar10", tmp_path / "partial")
    (tmp_path / "partial" / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(UserError, match="missing in .*batches.meta"):
        prepare("cifar10", source=tmp_path / "partial", root=root)
    not_archive = tmp_path / "cifar-10-python.tar.gz"
    not_archive.write_bytes(b"not gzip")
    with pytest.raises(UserError, match="cannot extract"):
        prepare("cifar10", source=not_archive, root=root)
    wrong = make_archive(empty, tmp_path / "wrong.tar.gz")
    with pytest.raises(UserError, match="does not contain cifar-10-batches-py/"):
        prepare("cifar10", source=wrong, root=root)
    assert tree(root) == []


def test_prepare_cifar_no_source(tmp_path, monkeypatch):
    import torchvision.datasets

    root = tmp_path / "root"
    with pytest.raises(UserError, match="downloading is disabled; pass --from DIR"):
        prepare("cifar100", source=None, root=root, allow_download=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", closed_port_url() + "cifar-10-python.tar.gz")
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        prepare("cifar10", source=None, root=root)
    assert tree(root) == []


def test_prepare_cifar_download(tmp_path, monkeypatch, fake_cifar, file_server):
    import torchvision.datasets

    served, url = file_server
    written = fake_cifar("cifar10", tmp_path / "made")
    archive = make_archive(tmp_path / "made" / "cifar-10-batches-py", served / "cifar-10-python.tar.gz")
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url + "cifar-10-python.tar.gz")
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(UserError, match="wrong MD5"):
        prepare("cifar10", source=None, root=tmp_path / "root")
    assert tree(tmp_path / "root") == []
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    prepared = prepare("cifar10", source=None, root=tmp_path / "root")
    assert np.array_equal(load_cifar("cifar10", prepared).train_labels, written["train_labels"])
    assert tree(tmp_path / "root")[:2] == ["cifar10", "cifar10/cifar-10-batches-py"]
    assert not [p for p in tree(tmp_path / "root") if "tmp" in p or p.endswith(".tar.gz")]
