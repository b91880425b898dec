from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from digitsum.data import MNIST_FILES, DataContext, load_mnist, shift_images
from digitsum.errors import UserError
from digitsum.testing import write_idx, write_tiny_mnist

CPU = torch.device("cpu")


@pytest.fixture
def root(tmp_path):
    return write_tiny_mnist(tmp_path, n_train=40, n_test=20)


def raw(root, split="train", which=0):
    return root / "MNIST" / "raw" / MNIST_FILES[split][which]


def test_loads_uint8_images_and_int64_labels(root):
    digits = load_mnist(root, "train", CPU)
    assert digits.images.shape == (40, 28, 28) and digits.images.dtype == torch.uint8
    assert digits.labels.dtype == torch.int64 and len(digits) == 40


def test_context_loads_each_split_once(root):
    ctx = DataContext(root)
    assert ctx.mnist("test") is ctx.mnist("test")


def test_missing_files_without_download_name_all_four(tmp_path):
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path, "train", CPU, download=False)
    for pair in MNIST_FILES.values():
        for name in pair:
            assert name in e.value.message


def test_a_file_in_the_way_or_gzipped_files_are_named(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(UserError, match=f"{tmp_path / 'afile'} is a file, not a folder"):
        load_mnist(tmp_path / "afile", "train", CPU, download=True)  # was: "download failed: ..."
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz is there compressed: unpack with gunzip"):
        load_mnist(tmp_path / "root", "train", CPU, download=False)


def test_a_relative_root_is_named_with_the_working_folder_it_is_relative_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"under tiny \\(a path relative to the working folder, {tmp_path}\\): download is off"):
        load_mnist(Path("tiny"), "train", CPU, download=False)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, *args, **kwargs):  # as torchvision fails: its folders made, a message over lines
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\n<urlopen error network is unreachable>\n")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    (tmp_path / "mine").mkdir()  # the user's, beside: kept
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path / "data", "train", CPU, download=True)
    assert "download failed: Error downloading train-images-idx3-ubyte.gz: Tried https://x, got: <urlopen error network is unreachable>" in e.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no empty folders left behind


def test_truncated_file(root):
    path = raw(root)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_mnist(root, "train", CPU)


def test_wrong_magic(root):
    path = raw(root, which=1)
    data = bytearray(path.read_bytes())
    data[:4] = (1234).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="magic number 1234"):
        load_mnist(root, "train", CPU)


def test_wrong_image_size(root):
    write_idx(raw(root), np.zeros((40, 20, 20), dtype=np.uint8))
    with pytest.raises(UserError, match="20x20 images"):
        load_mnist(root, "train", CPU)


def test_image_and_label_counts_must_agree(root):
    write_idx(raw(root, which=1), np.zeros(39, dtype=np.uint8))
    with pytest.raises(UserError, match="40 images but .* 39 labels"):
        load_mnist(root, "train", CPU)


def test_labels_out_of_range(root):
    write_idx(raw(root, which=1), np.full(40, 12, dtype=np.uint8))
    with pytest.raises(UserError, match="label 12"):
        load_mnist(root, "train", CPU)


def test_empty_header(root):
    raw(root).write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="shorter than an IDX header"):
        load_mnist(root, "train", CPU)


@pytest.mark.parametrize("xdg", ["set", "empty", "unset"])
def test_default_root_is_the_user_cache_folder_the_listing_cache_shares(tmp_path, monkeypatch, xdg):
    from digitsum import listing
    from digitsum.data import default_root
    from digitsum.paths import user_cache_dir

    monkeypatch.delenv("DIGITSUM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg == "set":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        expected = tmp_path / "xdg" / "digitsum"
    else:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        if xdg == "empty":  # empty means unset, per the XDG base directory spec
            monkeypatch.setenv("XDG_CACHE_HOME", "")
        expected = tmp_path / "home" / ".cache" / "digitsum"
    assert user_cache_dir() == expected
    assert default_root() == expected
    assert listing._cache_path().parent == expected / "components"


def test_digitsum_data_overrides_the_cache_folder(tmp_path, monkeypatch):
    from digitsum.data import default_root

    monkeypatch.setenv("DIGITSUM_DATA", str(tmp_path / "mnist"))
    assert default_root() == tmp_path / "mnist"


def test_reads_the_idx_files_exactly_without_torchvision(tmp_path, monkeypatch):
    # torchvision is only for downloading: reading must work (and be fast) without it
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    root = write_tiny_mnist(tmp_path, n_train=5, n_test=3)
    images = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28) % 251
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(raw(root), images.astype(np.uint8))
    write_idx(raw(root, which=1), labels)
    digits = load_mnist(root, "train", CPU)
    assert torch.equal(digits.images, torch.from_numpy(images.astype(np.uint8)))
    assert digits.labels.tolist() == [3, 1, 4, 1, 5]


def test_empty_split_loads(tmp_path):
    root = write_tiny_mnist(tmp_path, n_train=5, n_test=3)
    write_idx(raw(root, "test"), np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(raw(root, "test", 1), np.zeros(0, dtype=np.uint8))
    assert len(load_mnist(root, "test", CPU)) == 0


def _translated(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image [H, W]`` moved down ``dy`` and right ``dx`` pixels, the uncovered border 0."""
    h, w = image.shape
    out = torch.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


@pytest.mark.parametrize("most", [1, 2, 4])
def test_shift_images_moves_each_image_by_at_most_most_pixels_with_a_black_border(most):
    images = torch.rand(64, 1, 12, 12) + 0.1  # no zero pixel: a border that was filled shows
    shifted = shift_images(images, most, torch.Generator().manual_seed(0))
    moves = set()
    for original, moved in zip(images[:, 0], shifted[:, 0]):
        found = [(dy, dx) for dy in range(-most, most + 1) for dx in range(-most, most + 1)
                 if torch.equal(_translated(original, dy, dx), moved)]  # fmt: skip
        assert len(found) == 1, "each image is one translation of itself, within the range"
        moves.add(found[0])
    assert len(moves) > 1, "the moves are drawn per image"


def test_shift_images_is_fixed_by_the_generator_seed():
    images = torch.rand(16, 1, 8, 8)
    a, b, c = (shift_images(images, 2, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_an_idx_path_that_is_no_regular_file_is_refused_without_reading(tmp_path):
    import os

    from digitsum.data import read_idx
    from digitsum.errors import UserError

    fifo = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(UserError, match="is not a regular file"):
        read_idx(fifo, 3)
