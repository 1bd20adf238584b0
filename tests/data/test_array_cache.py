"""The decoded-dataset cache: decoded once, memory-mapped after, keyed on the source files, robust to damage."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedloom.data.array_cache import load_pooled
from fedloom.data.base import LoadContext, PooledDataset


@dataclass(frozen=True)
class FileSpec:
    """A tiny file dataset: one .npy of uint8 images, decoded to float32 in [-1, 1]; counts its decodes."""
    path: str
    registry_name = "test-files"

    def source_files(self, ctx: LoadContext) -> list[Path]:
        return [Path(self.path)]

    def load(self, ctx: LoadContext) -> PooledDataset:
        DECODES.append(self.path)
        raw = np.load(self.path)
        return PooledDataset(name="test-files", x=torch.from_numpy(raw.astype(np.float32) / 127.5 - 1),
                             y=torch.arange(len(raw)) % 3, num_classes=3, class_names=["a", "b", "c"],
                             source=str(Path(self.path).parent), natural_ids=np.arange(len(raw)) % 2)


DECODES: list[str] = []
CTX = LoadContext(None, 0, 2)


def _source(tmp_path: Path, seed: int = 0) -> Path:
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(seed).integers(0, 255, (6, 1, 4, 4), dtype=np.uint8))
    return path


def test_decoded_once_then_mapped_with_equal_content(tmp_path):
    DECODES.clear()
    spec = FileSpec(str(_source(tmp_path)))
    first = load_pooled(spec, CTX, tmp_path / "cache")
    second = load_pooled(spec, CTX, tmp_path / "cache")
    assert len(DECODES) == 1
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert np.array_equal(first.natural_ids, second.natural_ids)
    assert (second.name, second.num_classes, second.class_names, second.source) == (
        first.name, first.num_classes, first.class_names, first.source)
    second.x[0].zero_()  # copy-on-write: the process may write, the cache file keeps its values
    assert torch.equal(load_pooled(spec, CTX, tmp_path / "cache").x, first.x)


def test_a_changed_source_file_is_decoded_again(tmp_path):
    DECODES.clear()
    path = _source(tmp_path)
    spec = FileSpec(str(path))
    load_pooled(spec, CTX, tmp_path / "cache")
    _source(tmp_path, seed=1)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    changed = load_pooled(spec, CTX, tmp_path / "cache")
    assert len(DECODES) == 2
    assert torch.equal(changed.x, FileSpec(str(path)).load(CTX).x)


def test_damaged_entry_is_decoded_again(tmp_path):
    DECODES.clear()
    spec = FileSpec(str(_source(tmp_path)))
    load_pooled(spec, CTX, tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "datasets").iterdir()
    np.save(entry / "x.npy", np.zeros((2, 2), dtype=np.float32))  # shape no longer the meta's
    again = load_pooled(spec, CTX, tmp_path / "cache")
    assert len(DECODES) == 2 and again.x.shape == (6, 1, 4, 4)


def test_unwritable_cache_only_loses_the_speed_up(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    DECODES.clear()
    spec = FileSpec(str(_source(tmp_path)))
    assert load_pooled(spec, CTX, blocker).x.shape == (6, 1, 4, 4)
    assert load_pooled(spec, CTX, blocker).x.shape == (6, 1, 4, 4)
    assert len(DECODES) == 2


def test_specs_without_source_files_are_loaded_directly(tmp_path):
    class Generated:
        def load(self, ctx):
            return PooledDataset(name="g", x=torch.zeros(2, 3), y=torch.zeros(2, dtype=torch.long), num_classes=1)

    assert load_pooled(Generated(), CTX, tmp_path / "cache").x.shape == (2, 3)
    assert not (tmp_path / "cache").exists()
