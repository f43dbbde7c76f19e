"""The one atomic-write helper (vista2d_core.files) and its users: a write that fails midway leaves the
target as it was and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vista2d_core.files import atomic_dir, atomic_path, atomic_write_text
from vista2d_core.model import save_checkpoint


class DiskFull(OSError):
    pass


def test_atomic_write_text_replaces_or_leaves_the_old_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_write_text(tmp_path / "sub" / "a.json", "old")
    assert target.read_text() == "old"

    def half_then_fail(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as f:
            f.write(text[: len(text) // 2])
        raise DiskFull("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(DiskFull):
        atomic_write_text(target, "new text")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_atomic_dir_keeps_the_old_folder_when_the_new_one_fails(tmp_path: Path) -> None:
    target = tmp_path / "labels.zarr"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "chunk").write_text("1")
    with pytest.raises(DiskFull), atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "chunk").write_text("half")
        raise DiskFull
    assert [p.name for p in tmp_path.iterdir()] == ["labels.zarr"] and (target / "chunk").read_text() == "1"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "chunk").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["labels.zarr"] and (target / "chunk").read_text() == "2"


def test_a_checkpoint_that_fails_midway_leaves_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = torch.nn.Linear(2, 2)
    path = save_checkpoint(net, tmp_path / "model.pt", epoch=0)
    before = path.read_bytes()
    real_save = torch.save

    def save_half(obj: object, f: Path) -> None:
        real_save(obj, f)
        Path(f).write_bytes(Path(f).read_bytes()[:100])
        raise DiskFull("disk full")

    monkeypatch.setattr(torch, "save", save_half)
    with pytest.raises(DiskFull):
        save_checkpoint(net, path, epoch=1)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_the_temporary_file_keeps_the_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.ome.tif") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tif") and tmp.name.startswith(".")
        tmp.write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]
