"""Datasets: a registry of loaders, canonical uint8 arrays on disk, and positive pairs.

Every dataset is reduced to the same canonical form, one pair of ``.npy`` files per split::

    <out_dir>/<split>_x.npy   uint8, N x H x W x C   (memory-mappable: np.load(..., mmap_mode="r"))
    <out_dir>/<split>_y.npy   int64, N               (-1 where a split is unlabelled)
    <out_dir>/manifest.json   counts per split and class, shape, source path, sha256 (with size and
                              mtime stamp) of each array; :func:`load_split` verifies them

Integrity: CIFAR-10 and STL-10 have known split and class counts (``EXPECTED_COUNTS``); a source
that yields other counts (an archive cut between two members reads as a smaller dataset) or that
cannot be read to its end (a truncated gzip stream, a short binary file) raises
:class:`DatasetIntegrityError` naming the file, what was found against what was expected, and the
remedy. Later stages open the canonical arrays with :func:`load_split`, which checks each file
against the digest the manifest recorded: by size always, by sha256 unless the file's size and
mtime still equal the stamp taken when the digest was computed.

Loaders (``DATASETS``):

``digits``       scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), offline. Digits has
                 no official split: every 5th image (index % 5 == 4) is the test split.
``cifar10``      under ``data_dir``: torchvision's python batches (``cifar-10-batches-py/``), an
                 ImageFolder directory (``cifar10/train/<class>/*``, ``cifar10/test/...``), or a
                 tarball of that folder (``cifar10-jpeg.tar.gz``, read in place, never extracted).
``stl10``        torchvision's STL-10 binary layout (``stl10_binary/{train,test,unlabeled}_X.bin``).
``imagefolder``  any folder with ``train/<class>/*`` and optional ``test/<class>/*``; images are
                 resized to ``image_size``. Without ``test/``, every 5th training image is held out.
"""

from __future__ import annotations

import io as _io
import logging
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslkit.io import atomic_path, save_json, sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetIntegrityError",
    "EXPECTED_COUNTS",
    "Split",
    "load_dataset",
    "prepare_dataset",
    "load_split",
    "verify_split",
    "check_counts",
    "load_manifest",
    "make_pairs",
    "save_pairs",
    "DEFAULT_CROP",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_TARBALLS = ("cifar10-jpeg.tar.gz", "cifar10.tar.gz", "cifar10.tgz", "cifar10.tar")
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

#: crop side used for the linear experiment's positive pairs when config ``pairs.crop`` is null
DEFAULT_CROP = {"digits": 6, "cifar10": 20, "stl10": 20, "imagefolder": 20}


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is not on disk (and cannot or may not be downloaded)."""


class DatasetIntegrityError(ValueError):
    """A dataset file is short, corrupt or has other counts than the dataset has; the message names
    the file, what was found against what was expected, and the remedy."""


#: the published split sizes and per-class counts: {dataset: {split: (images, images per class or None)}}
EXPECTED_COUNTS: dict[str, dict[str, tuple[int, int | None]]] = {
    "cifar10": {"train": (50000, 5000), "test": (10000, 1000)},
    "stl10": {"train": (5000, 500), "test": (8000, 800), "unlabeled": (100000, None)},
}

_REMEDY = {
    "cifar10": "The archive or folder is incomplete or damaged: copy or download it again (check a tarball "
               "with `gzip -t` / `tar -tzf`). For a deliberate subset of CIFAR-10 use dataset 'imagefolder'.",
    "stl10": "The STL-10 binary files are incomplete or damaged: copy or download stl10_binary/ again.",
}


def check_counts(name: str, splits: Mapping[str, Split], source: str | os.PathLike,
                 expected: Mapping[str, tuple[int, int | None]] | None = None) -> None:
    """Raise :class:`DatasetIntegrityError` unless ``splits`` have ``expected`` (default: the known
    counts of ``name``) images per split and per class."""
    expected = EXPECTED_COUNTS.get(name) if expected is None else expected
    if not expected:
        return
    problems = []
    for split, (total, per_class) in expected.items():
        if split not in splits:
            if split != "unlabeled":
                problems.append(f"split '{split}' is missing (expected {total} images)")
            continue
        labels = np.asarray(splits[split].labels)
        if len(labels) != total:
            problems.append(f"split '{split}' has {len(labels)} images, expected {total}")
        if per_class is not None and len(labels) > 0:
            ks, cs = np.unique(labels, return_counts=True)
            bad = {int(k): int(c) for k, c in zip(ks, cs) if c != per_class}
            if bad or len(ks) != 10:
                shown = ", ".join(f"class {k}: {c}" for k, c in list(bad.items())[:5])
                problems.append(f"split '{split}' has {len(ks)} classes ({shown or 'each of the right size'}), "
                                f"expected 10 classes of {per_class} images")
    if problems:
        raise DatasetIntegrityError(f"dataset '{name}' read from {source}: " + "; ".join(problems)
                                    + f". {_REMEDY.get(name, '')}")


@dataclass
class Split:
    images: np.ndarray  # uint8 N x H x W x C
    labels: np.ndarray  # int64 N (-1 = unlabelled)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 N x H x W x C, got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)


@dataclass
class Dataset:
    name: str
    splits: dict[str, Split]
    classes: list[str]
    source: str
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------

def _every_fifth_split(images: np.ndarray, labels: np.ndarray) -> dict[str, Split]:
    idx = np.arange(len(images))
    test = idx % 5 == 4
    return {"train": Split(images[~test], labels[~test]), "test": Split(images[test], labels[test])}


def load_digits_dataset(data_dir: str | os.PathLike | None = None, **_) -> Dataset:
    """scikit-learn's 8x8 digits, pixel values 0..16 rescaled to 0..255, shape N x 8 x 8 x 1."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    return Dataset("digits", _every_fifth_split(images, d.target), [str(i) for i in range(10)],
                   source="sklearn.datasets.load_digits",
                   extra={"test_split": "index % 5 == 4 (digits has no official split)"})


def _decode_image(data: bytes | _io.BufferedIOBase, size: int | None = None, mode: str = "RGB") -> np.ndarray:
    from PIL import Image

    with Image.open(data if not isinstance(data, bytes) else _io.BytesIO(data)) as im:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            # centre-crop to a square, then resize: keeps the aspect ratio of every image
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            im = im.resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    return arr if arr.ndim == 3 else arr[..., None]


def _stack(images: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images under {where} have different shapes {sorted(shapes)[:4]}...; "
                         "set imagefolder.image_size to resize them to one size")
    return np.stack(images).astype(np.uint8)


def _read_imagefolder_dir(root: Path, size: int | None) -> tuple[dict[str, Split], list[str]]:
    splits, classes = {}, None
    for split in ("train", "test"):
        sdir = root / split
        if not sdir.is_dir():
            continue
        cls = sorted(p.name for p in sdir.iterdir() if p.is_dir())
        if not cls:
            raise ValueError(f"{sdir} has no class sub-folders (expected {sdir}/<class>/<image>)")
        classes = classes or cls
        if cls != classes:
            raise ValueError(f"class folders of {sdir} {cls} differ from those of train {classes}")
        imgs, labels = [], []
        for k, c in enumerate(cls):
            for f in sorted((sdir / c).iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    imgs.append(_decode_image(f.read_bytes(), size))
                    labels.append(k)
        if not imgs:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {sdir}")
        splits[split] = Split(_stack(imgs, str(sdir)), np.array(labels))
    return splits, classes or []


def _read_imagefolder_tar(path: Path, size: int | None,
                          known_classes: list[str] | None = None) -> tuple[dict[str, Split], list[str]]:
    """Read ``[prefix/]split/class/image`` members of a tarball in one streaming pass.

    ``known_classes``: the dataset's class folders (label = position); a class missing from the
    archive then reads as zero images (for the count check to report) instead of shifting labels."""
    found: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    n_read, last = 0, None
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                if not member.isfile() or not member.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if len(parts) < 3 or parts[-3] not in ("train", "test"):
                    continue
                split, cls = parts[-3], parts[-2]
                fh = tf.extractfile(member)
                image = _decode_image(fh.read(), size)
                found.setdefault(split, {}).setdefault(cls, []).append((member.name, image))
                n_read, last = n_read + 1, member.name
    except (EOFError, OSError, tarfile.TarError, zlib.error) as exc:
        after = f"after {n_read} images (last: {last})" if n_read else "before the first image"
        raise DatasetIntegrityError(
            f"tarball {path} is truncated or corrupt: reading stopped {after} with "
            f"{type(exc).__name__}: {exc}. Copy or download the archive again (check it with `gzip -t {path}`)."
        ) from exc
    if "train" not in found:
        raise ValueError(f"tarball {path} has no train/<class>/<image> members")
    classes = list(known_classes) if known_classes else sorted(found["train"])
    splits = {}
    for split, by_cls in found.items():
        if known_classes:
            unknown = sorted(set(by_cls) - set(classes))
            if unknown:
                raise ValueError(f"{path}: class folders {unknown} under {split}/ are not classes of this "
                                 f"dataset ({classes})")
        elif sorted(by_cls) != classes:
            raise ValueError(f"{path}: classes of {split}/ {sorted(by_cls)} differ from train/ {classes}")
        imgs, labels = [], []
        for k, c in enumerate(classes):
            for _, im in sorted(by_cls.get(c, []), key=lambda t: t[0]):
                imgs.append(im)
                labels.append(k)
        splits[split] = Split(_stack(imgs, f"{path}:{split}"), np.array(labels))
    return splits, classes


def _read_cifar_batches(root: Path) -> dict[str, Split]:
    def read(files: Iterable[Path]) -> Split:
        xs, ys = [], []
        for f in files:
            with open(f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        return Split(np.concatenate(xs).transpose(0, 2, 3, 1).copy(), np.array(ys))

    train_files = sorted(root.glob("data_batch_*"))
    if not train_files:
        raise ValueError(f"{root} has no data_batch_* files")
    out = {"train": read(train_files)}
    if (root / "test_batch").exists():
        out["test"] = read([root / "test_batch"])
    return out


def _cifar10_candidates(data_dir: Path) -> list[Path]:
    return ([data_dir / "cifar-10-batches-py", data_dir / "cifar10"]
            + [data_dir / name for name in CIFAR10_TARBALLS])


def load_cifar10(data_dir: str | os.PathLike = "data", download: bool = False, **_) -> Dataset:
    data_dir = Path(data_dir)
    batches, folder, *tarballs = _cifar10_candidates(data_dir)
    if download and not any(p.exists() for p in [batches, folder, *tarballs]):
        _torchvision_download("cifar10", data_dir)
    if (batches / "data_batch_1").exists():
        splits, src = _read_cifar_batches(batches), batches
    elif (folder / "train").is_dir():
        splits, classes = _read_imagefolder_dir(folder, None)
        src = folder
    else:
        tar = next((t for t in tarballs if t.is_file()), None)
        if tar is None:
            raise _not_found("cifar10", [batches, folder, *tarballs],
                             "Put torchvision's CIFAR-10 python batches (cifar-10-batches-py/) or an "
                             "ImageFolder copy (cifar10/train/<class>/*.jpg, or the tarball "
                             "cifar10-jpeg.tar.gz of that folder) under data_dir, e.g. "
                             "`--config data_dir=/path/to/datasets`; or set `download: true` on a "
                             "machine with internet access.")
        splits, classes = _read_imagefolder_tar(tar, None, CIFAR10_CLASSES)
        src = tar
    for s in splits.values():
        if s.images.shape[1:] != (32, 32, 3):
            raise ValueError(f"CIFAR-10 images must be 32x32x3, found {s.images.shape[1:]} in {src}")
    check_counts("cifar10", splits, src.resolve())
    return Dataset("cifar10", splits, CIFAR10_CLASSES, source=str(src.resolve()))


def load_stl10(data_dir: str | os.PathLike = "data", download: bool = False, **_) -> Dataset:
    root = Path(data_dir) / "stl10_binary"
    if download and not root.exists():
        _torchvision_download("stl10", Path(data_dir))
    if not (root / "train_X.bin").exists():
        raise _not_found("stl10", [root / "train_X.bin"],
                         "Put torchvision's STL-10 binary release (stl10_binary/train_X.bin, "
                         "train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin) under data_dir, "
                         "or set `download: true` on a machine with internet access.")

    def read_x(name: str) -> np.ndarray:
        size, image = (root / name).stat().st_size, 3 * 96 * 96
        if size % image:
            raise DatasetIntegrityError(
                f"{root / name} has {size} bytes, not a whole number of 96x96x3 images ({image} bytes each): "
                f"the file is truncated. {_REMEDY['stl10']}")
        raw = np.fromfile(root / name, dtype=np.uint8).reshape(-1, 3, 96, 96)
        return raw.transpose(0, 3, 2, 1).copy()  # stored column-major: (N, C, W, H) -> N x H x W x C

    splits = {}
    for split in ("train", "test"):
        if (root / f"{split}_X.bin").exists():
            y = np.fromfile(root / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
            x = read_x(f"{split}_X.bin")
            if len(y) != len(x):
                raise DatasetIntegrityError(
                    f"{root / f'{split}_y.bin'} has {len(y)} labels but {root / f'{split}_X.bin'} has {len(x)} "
                    f"images: one of them is truncated. {_REMEDY['stl10']}")
            splits[split] = Split(x, y)
    if (root / "unlabeled_X.bin").exists():
        x = read_x("unlabeled_X.bin")
        splits["unlabeled"] = Split(x, -np.ones(len(x), dtype=np.int64))
    check_counts("stl10", splits, root.resolve())
    return Dataset("stl10", splits, STL10_CLASSES, source=str(root.resolve()))


def load_imagefolder(path: str | os.PathLike | None = None, image_size: int | None = 32, **_) -> Dataset:
    if not path:
        raise DatasetNotFoundError("dataset 'imagefolder' needs config key imagefolder.path "
                                   "(a folder with train/<class>/<images> and optional test/)")
    root = Path(path)
    if root.is_file():
        splits, classes = _read_imagefolder_tar(root, image_size)
    elif (root / "train").is_dir():
        splits, classes = _read_imagefolder_dir(root, image_size)
    else:
        raise _not_found("imagefolder", [root / "train"],
                         "Point config key imagefolder.path at a folder with train/<class>/<images> "
                         "(and optionally test/<class>/<images>), or at a tarball of such a folder.")
    extra = {}
    if "test" not in splits:
        splits = _every_fifth_split(splits["train"].images, splits["train"].labels)
        extra["test_split"] = "held out from train: index % 5 == 4"
    return Dataset("imagefolder", splits, classes, source=str(root.resolve()), extra=extra)


def _not_found(name: str, looked: list[Path], remedy: str) -> DatasetNotFoundError:
    paths = "\n".join(f"  - {p.resolve()}" for p in looked)
    return DatasetNotFoundError(f"dataset '{name}' not found. Looked at:\n{paths}\n{remedy}")


def _torchvision_download(name: str, data_dir: Path) -> None:
    import torchvision

    log.info("downloading %s into %s with torchvision", name, data_dir)
    try:
        if name == "cifar10":
            torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
            torchvision.datasets.CIFAR10(str(data_dir), train=False, download=True)
        else:
            torchvision.datasets.STL10(str(data_dir), split="train", download=True)
    except Exception as exc:  # no network: say so plainly
        raise DatasetNotFoundError(
            f"`download: true` could not download {name} into {data_dir.resolve()} ({exc}). "
            f"This machine may be offline: copy the dataset under data_dir by hand instead.") from exc


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits_dataset,
    "cifar10": load_cifar10,
    "stl10": load_stl10,
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, **options) -> Dataset:
    """Load a registered dataset into memory. ``options``: data_dir, download, path, image_size."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name](**options)


# --------------------------------------------------------------------------------------------
# canonical arrays on disk
# --------------------------------------------------------------------------------------------

def prepare_dataset(name: str, out_dir: str | os.PathLike, **options) -> dict:
    """Load ``name`` and write its canonical arrays and manifest to ``out_dir``; return the manifest.

    Nothing is written before the source has been read completely, and every file is written
    atomically, manifest last, so a failure leaves no partial output.
    """
    ds = load_dataset(name, **options)
    out = Path(out_dir)
    manifest = {"dataset": name, "source": ds.source, "classes": ds.classes, "splits": {}, **ds.extra}
    for split, s in ds.splits.items():
        for suffix, arr in (("x", s.images), ("y", s.labels)):
            with atomic_path(out / f"{split}_{suffix}.npy", suffix=".npy") as tmp:
                np.save(tmp, np.ascontiguousarray(arr), allow_pickle=False)
        labels, counts = np.unique(s.labels, return_counts=True)
        manifest["splits"][split] = {
            "count": int(len(s.images)),
            "shape": list(s.images.shape),
            "dtype": "uint8",
            "images": f"{split}_x.npy",
            "labels": f"{split}_y.npy",
            "class_counts": {str(int(k)): int(c) for k, c in zip(labels, counts)},
            "sha256": sha256_file(out / f"{split}_x.npy"),
            "labels_sha256": sha256_file(out / f"{split}_y.npy"),
            "stamps": {f"{split}_{sfx}.npy": _stamp(out / f"{split}_{sfx}.npy") for sfx in ("x", "y")},
        }
    save_json(out / "manifest.json", manifest)
    return manifest


def load_manifest(data_dir: str | os.PathLike) -> dict:
    from sslkit.io import load_json

    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the prepare_data rule first")
    return load_json(path)


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def verify_split(data_dir: str | os.PathLike, split: str, manifest: Mapping | None = None) -> None:
    """Check the arrays of ``split`` against the digests of the data manifest; raise
    :class:`DatasetIntegrityError` naming the file and the remedy on a mismatch.

    Cheap: the size is always compared; the sha256 is recomputed only when the file's size or mtime
    differs from the stamp recorded with the digest (a file copied without its mtime is hashed once
    per load). Manifests written before stamps existed are verified by their digests.
    """
    data_dir = Path(data_dir)
    if manifest is None:
        path = data_dir / "manifest.json"
        if not path.exists():
            return
        manifest = load_manifest(data_dir)
    info = manifest.get("splits", {}).get(split)
    if not info:
        return
    stamps = info.get("stamps", {})
    for name, digest in ((info.get("images", f"{split}_x.npy"), info.get("sha256")),
                         (info.get("labels", f"{split}_y.npy"), info.get("labels_sha256"))):
        f = data_dir / name
        if digest is None or not f.exists():
            continue
        stamp, now = stamps.get(name), _stamp(f)
        remedy = (f"Rerun the data stage: `snakemake --forcerun prepare_data` (or delete {data_dir} and rerun), "
                  "then the stages that use it.")
        if stamp and now["bytes"] != stamp["bytes"]:
            raise DatasetIntegrityError(f"{f} has {now['bytes']} bytes but the data manifest "
                                        f"{data_dir / 'manifest.json'} recorded {stamp['bytes']}: the file is "
                                        f"truncated or was replaced. {remedy}")
        if stamp == now:
            continue
        found = sha256_file(f)
        if found != digest:
            raise DatasetIntegrityError(f"{f} has sha256 {found[:16]}... but the data manifest "
                                        f"{data_dir / 'manifest.json'} recorded {digest[:16]}...: the file is "
                                        f"damaged or was replaced. {remedy}")


def load_split(data_dir: str | os.PathLike, split: str = "train", mmap: bool = True, verify: bool = True) -> Split:
    """Open a prepared split; the images are memory-mapped unless ``mmap=False``. With ``verify``
    (default) the arrays are first checked against the data manifest's digests (:func:`verify_split`)."""
    data_dir = Path(data_dir)
    x, y = data_dir / f"{split}_x.npy", data_dir / f"{split}_y.npy"
    if not x.exists():
        available = sorted(p.name[:-6] for p in data_dir.glob("*_x.npy"))
        raise FileNotFoundError(f"split '{split}' not found in {data_dir} (available: {available})")
    if verify:
        verify_split(data_dir, split)
    return Split(np.load(x, mmap_mode="r" if mmap else None), np.load(y))


# --------------------------------------------------------------------------------------------
# positive pairs for the linear model
# --------------------------------------------------------------------------------------------

def make_pairs(images: np.ndarray, n: int, crop: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two independent random ``crop x crop`` crops of ``n`` images chosen without replacement.

    Args:
        images: uint8 array N x H x W x C.
        n: number of positive pairs (``n <= N``).
        crop: crop side ``c`` (``c <= min(H, W)``).
        seed: seed of the ``numpy.random.Generator`` that picks images and crop corners.

    Returns:
        ``X``, ``Xp``: float64 ``n x (c*c*C)`` flattened in (row, column, channel) order, values in
        [0, 1]; ``index``: the chosen image indices; ``corners``, ``corners_p``: the ``(row, col)``
        top-left corners of the crops (``n x 2``).
    """
    N, H, W, C = images.shape
    if not 1 <= n <= N:
        raise ValueError(f"pairs.n = {n} must be between 1 and the number of images ({N})")
    if not 1 <= crop <= min(H, W):
        raise ValueError(f"pairs.crop = {crop} must be between 1 and the image side ({min(H, W)})")
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(N, size=n, replace=False))
    corners = np.stack([rng.integers(0, H - crop + 1, n), rng.integers(0, W - crop + 1, n)], 1)
    corners_p = np.stack([rng.integers(0, H - crop + 1, n), rng.integers(0, W - crop + 1, n)], 1)

    def cut(cs: np.ndarray) -> np.ndarray:
        out = np.empty((n, crop, crop, C), dtype=np.float64)
        for i, (img, (r, c)) in enumerate(zip(index, cs)):
            out[i] = images[img, r:r + crop, c:c + crop, :]
        return out.reshape(n, -1) / 255.0

    return {"X": cut(corners), "Xp": cut(corners_p), "index": index,
            "corners": corners, "corners_p": corners_p}


def save_pairs(path: str | os.PathLike, pairs: dict[str, np.ndarray]) -> None:
    from sslkit.io import save_npz

    save_npz(path, **pairs)
