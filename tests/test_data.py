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


def test_cifar10_from_tiny_tarball(tmp_path, monkeypatch):
    """The cifar10 loader reads the tarball in place (no extraction into the repo)."""
    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (10, 1), "test": (10, 1)})
    _write_folder(tmp_path / "src", classes=data.CIFAR10_CLASSES, n_per_class=1, size=32)
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "src" / split, arcname=split)
    out = tmp_path / "out"
    m = data.prepare_dataset("cifar10", out, data_dir=tmp_path)
    assert m["splits"]["train"]["shape"] == [10, 32, 32, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-jpeg.tar.gz", "out", "src"]


def test_cifar10_python_batches(tmp_path, monkeypatch):
    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (4, None), "test": (1, None)})
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


def test_stl10_binary_layout(tmp_path, monkeypatch):
    monkeypatch.setitem(data.EXPECTED_COUNTS, "stl10", {"train": (3, None)})
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


# ---- integrity (issue 17, part 1) ----------------------------------------------------------------

def _tiny_cifar_tar(tmp_path, n_per_class=2):
    """A cifar10-jpeg.tar.gz with the real layout (train/<class>/*.png, test/...), n images per class."""
    _write_folder(tmp_path / "src", classes=data.CIFAR10_CLASSES, n_per_class=n_per_class, size=32)
    tar_path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "src" / split, arcname=split)
    return tar_path


def test_cifar10_real_counts_are_the_expected_ones():
    assert data.EXPECTED_COUNTS["cifar10"] == {"train": (50000, 5000), "test": (10000, 1000)}
    assert data.EXPECTED_COUNTS["stl10"]["train"] == (5000, 500)
    assert data.EXPECTED_COUNTS["stl10"]["test"] == (8000, 800)
    assert data.EXPECTED_COUNTS["stl10"]["unlabeled"][0] == 100000


def test_tarball_cut_between_members_names_file_and_counts(tmp_path, monkeypatch):
    """The issue's probe: a tarball cut at a member boundary used to read as a smaller dataset, silently."""
    import gzip

    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (20, 2), "test": (20, 2)})
    full = _tiny_cifar_tar(tmp_path)
    assert data.load_dataset("cifar10", data_dir=tmp_path).splits["train"].images.shape[0] == 20
    # cut the (uncompressed) tar stream right after the 30th member, recompress: a well-formed gzip
    raw = gzip.decompress(full.read_bytes())
    with tarfile.open(full, "r:gz") as tf:
        members = tf.getmembers()
    cut_at = members[-3].offset  # header of the third-last member: everything before it is whole members
    full.write_bytes(gzip.compress(raw[:cut_at]))
    out = tmp_path / "out"
    with pytest.raises(data.DatasetIntegrityError) as err:
        data.prepare_dataset("cifar10", out, data_dir=tmp_path)
    msg = str(err.value)
    assert str(full.resolve()) in msg
    assert "split 'test' has 18 images, expected 20" in msg  # found against expected
    assert "copy or download it again" in msg
    assert not (out / "manifest.json").exists()


def test_tarball_truncated_gzip_names_file(tmp_path, monkeypatch):
    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (20, 2), "test": (20, 2)})
    full = _tiny_cifar_tar(tmp_path)
    blob = full.read_bytes()
    full.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(data.DatasetIntegrityError) as err:
        data.load_dataset("cifar10", data_dir=tmp_path)
    msg = str(err.value)
    assert str(full) in msg and "truncated or corrupt" in msg and "gzip -t" in msg


def test_cifar10_wrong_class_counts(tmp_path, monkeypatch):
    """Right total, wrong balance (expected counts per class): reported per class."""
    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (20, 2), "test": (20, 2)})
    full = _tiny_cifar_tar(tmp_path)
    with tarfile.open(full, "r:gz") as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    assert len(names) == 40
    monkeypatch.setitem(data.EXPECTED_COUNTS, "cifar10", {"train": (20, 3), "test": (20, 2)})
    with pytest.raises(data.DatasetIntegrityError, match=r"expected 10 classes of 3 images"):
        data.load_dataset("cifar10", data_dir=tmp_path)


def test_stl10_short_binary_names_file(tmp_path):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    (root / "train_X.bin").write_bytes(bytes(3 * 96 * 96 * 2 + 100))
    np.array([1, 2], dtype=np.uint8).tofile(root / "train_y.bin")
    with pytest.raises(data.DatasetIntegrityError, match="train_X.bin.*truncated"):
        data.load_dataset("stl10", data_dir=tmp_path)


def test_load_split_verifies_the_manifest_digests(tmp_path):
    data.prepare_dataset("digits", tmp_path)
    data.load_split(tmp_path, "train")  # intact
    f = tmp_path / "train_x.npy"
    blob = bytearray(f.read_bytes())
    blob[-1] ^= 0xFF  # same size, other content (and a new mtime)
    f.write_bytes(bytes(blob))
    with pytest.raises(data.DatasetIntegrityError) as err:
        data.load_split(tmp_path, "train")
    assert str(f) in str(err.value) and "sha256" in str(err.value) and "prepare_data" in str(err.value)
    f.write_bytes(bytes(blob[:-100]))  # truncated: caught by size alone
    with pytest.raises(data.DatasetIntegrityError, match="bytes but the data manifest"):
        data.load_split(tmp_path, "train")
    data.load_split(tmp_path, "test")  # the other split is untouched
