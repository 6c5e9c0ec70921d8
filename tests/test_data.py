"""sslkit.data: loaders, canonical arrays, manifest, positive pairs."""
from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from sslkit import data
from sslkit.io import sha256_file


def _write_folder(root, n_per_class=3, classes=("cat", "dog"), size=10, splits=("train", "test"), seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n_per_class):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i:04d}.png")
                arrays[(split, c, i)] = a
    return arrays


def test_digits_prepare_shapes_labels_manifest(tmp_path):
    m = data.prepare_dataset("digits", tmp_path)
    train, test = data.load_split(tmp_path, "train"), data.load_split(tmp_path, "test")
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8, 1)
    assert len(train.images) + len(test.images) == 1797
    assert len(test.images) == 1797 // 5  # every fifth image
    assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))
    assert isinstance(train.images, np.memmap)
    # pixel range: sklearn digits go 0..16 -> 0..255
    assert train.images.max() == 255 and train.images.min() == 0
    for split, s in (("train", train), ("test", test)):
        info = m["splits"][split]
        assert info["count"] == len(s.images)
        assert info["shape"] == list(s.images.shape)
        assert sum(info["class_counts"].values()) == info["count"]
        assert info["class_counts"] == {str(k): int((s.labels == k).sum()) for k in range(10)}
        assert info["sha256"] == sha256_file(tmp_path / f"{split}_x.npy")
    assert json.loads((tmp_path / "manifest.json").read_text()) == m


def test_imagefolder_directory(tmp_path):
    arrays = _write_folder(tmp_path / "imgs")
    ds = data.load_dataset("imagefolder", path=tmp_path / "imgs", image_size=10)
    assert ds.classes == ["cat", "dog"]
    tr = ds.splits["train"]
    assert tr.images.shape == (6, 10, 10, 3)
    assert list(tr.labels) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(tr.images[4], arrays[("train", "dog", 1)])  # PNG is lossless


def test_imagefolder_resizes_and_holds_out_test(tmp_path):
    _write_folder(tmp_path / "imgs", n_per_class=5, size=12, splits=("train",))
    ds = data.load_dataset("imagefolder", path=tmp_path / "imgs", image_size=8)
    assert ds.splits["train"].images.shape == (8, 8, 8, 3)
    assert ds.splits["test"].images.shape == (2, 8, 8, 3)
    assert "held out" in ds.extra["test_split"]


def test_imagefolder_tarball_equals_directory(tmp_path):
    _write_folder(tmp_path / "imgs")
    tar_path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "imgs" / split, arcname=f"./{split}")
    a = data.load_dataset("imagefolder", path=tmp_path / "imgs", image_size=None)
    b = data.load_dataset("imagefolder", path=tar_path, image_size=None)
    for split in ("train", "test"):
        np.testing.assert_array_equal(a.splits[split].images, b.splits[split].images)
        np.testing.assert_array_equal(a.splits[split].labels, b.splits[split].labels)


def test_cifar10_from_tiny_tarball(tmp_path):
    """The cifar10 loader reads the tarball in place (no extraction into the repo)."""
    _write_folder(tmp_path / "src", classes=data.CIFAR10_CLASSES, n_per_class=1, size=32)
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "src" / split, arcname=split)
    out = tmp_path / "out"
    m = data.prepare_dataset("cifar10", out, data_dir=tmp_path)
    assert m["splits"]["train"]["shape"] == [10, 32, 32, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-jpeg.tar.gz", "out", "src"]


def test_cifar10_python_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(1)
    chw = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    for i, name in enumerate(["data_batch_1", "data_batch_2"]):
        batch = {"data": chw[2 * i:2 * i + 2].reshape(2, -1), "labels": [2 * i, 2 * i + 1]}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "test_batch").write_bytes(pickle.dumps({"data": chw[:1].reshape(1, -1), "labels": [9]}))
    ds = data.load_dataset("cifar10", data_dir=tmp_path)
    tr = ds.splits["train"]
    assert tr.images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(tr.images[3], chw[3].transpose(1, 2, 0))
    assert list(tr.labels) == [0, 1, 2, 3] and list(ds.splits["test"].labels) == [9]


def test_stl10_binary_layout(tmp_path):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    rng = np.random.default_rng(2)
    hwc = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    # STL-10 stores each image as C x W x H (column-major)
    hwc.transpose(0, 3, 2, 1).tofile(root / "train_X.bin")
    np.array([1, 5, 10], dtype=np.uint8).tofile(root / "train_y.bin")
    ds = data.load_dataset("stl10", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.splits["train"].images, hwc)
    assert list(ds.splits["train"].labels) == [0, 4, 9]


def test_missing_dataset_names_paths_and_remedy(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.prepare_dataset("cifar10", out, data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    for name in ("cifar-10-batches-py", "cifar10-jpeg.tar.gz", str(tmp_path / "nowhere")):
        assert name in msg
    assert "data_dir" in msg and "download: true" in msg
    assert not out.exists() or not any(out.iterdir())  # nothing partial left behind
    with pytest.raises(data.DatasetNotFoundError, match="stl10_binary"):
        data.load_dataset("stl10", data_dir=tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="imagefolder.path"):
        data.load_dataset("imagefolder", path=None)


def test_failed_write_keeps_previous_output(tmp_path):
    from sslkit.io import atomic_path

    target = tmp_path / "a.npy"
    np.save(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_pairs_shapes_determinism_and_crops():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 10, 3), dtype=np.uint8)
    p = data.make_pairs(images, n=25, crop=5, seed=3)
    assert p["X"].shape == p["Xp"].shape == (25, 75) and p["X"].dtype == np.float64
    assert 0.0 <= p["X"].min() and p["X"].max() <= 1.0
    assert len(set(p["index"].tolist())) == 25
    q = data.make_pairs(images, n=25, crop=5, seed=3)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])
    assert not np.array_equal(p["X"], data.make_pairs(images, n=25, crop=5, seed=4)["X"])
    for corners in (p["corners"], p["corners_p"]):
        assert (corners >= 0).all() and (corners[:, 0] + 5 <= 12).all() and (corners[:, 1] + 5 <= 10).all()
    # each row really is the crop at its recorded corner
    for i in (0, 7, 24):
        r, c = p["corners_p"][i]
        np.testing.assert_array_equal(p["Xp"][i], images[p["index"][i], r:r + 5, c:c + 5].reshape(-1) / 255.0)
    assert not np.allclose(p["X"], p["Xp"])


def test_pairs_reject_bad_sizes():
    images = np.zeros((5, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="pairs.n"):
        data.make_pairs(images, n=6, crop=4)
    with pytest.raises(ValueError, match="pairs.crop"):
        data.make_pairs(images, n=2, crop=9)


def test_cifar10_shared_tarball(cifar10_dir, tmp_path):
    """The real CIFAR-10 JPEG tarball: 50,000 train and 10,000 test images, 10 balanced classes."""
    m = data.prepare_dataset("cifar10", tmp_path, data_dir=cifar10_dir)
    assert m["splits"]["train"]["shape"] == [50000, 32, 32, 3]
    assert m["splits"]["test"]["shape"] == [10000, 32, 32, 3]
    assert m["splits"]["train"]["class_counts"] == {str(k): 5000 for k in range(10)}
    assert m["splits"]["test"]["class_counts"] == {str(k): 1000 for k in range(10)}
    pairs = data.make_pairs(data.load_split(tmp_path, "train").images, n=500, crop=20, seed=0)
    assert pairs["X"].shape == (500, 1200)
