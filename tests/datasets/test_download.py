"""Checksum verification and the download switch, without any network: file:// URLs stand in for mirrors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedloom.data.download import RemoteFile, download_requested, extract, fetch, verify_file
from fedloom.errors import DataError

CONTENT = b"fedloom fixture bytes\n"


def test_verify_known_digests_and_refuse_wrong_ones(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    verify_file(path, "sha256:" + hashlib.sha256(CONTENT).hexdigest())
    verify_file(path, "md5:" + hashlib.md5(CONTENT).hexdigest())
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_file(path, "sha256:" + "0" * 64)
    with pytest.raises(ValueError):
        verify_file(path, "crc32:1234")


def test_fetch_keeps_only_verified_files(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "f.bin"
    source.parent.mkdir()
    source.write_bytes(CONTENT)
    good = RemoteFile("f.bin", source.as_uri(), "md5:" + hashlib.md5(CONTENT).hexdigest())
    bad = RemoteFile("g.bin", source.as_uri(), "md5:" + "0" * 32)
    assert fetch(good, tmp_path / "cache").read_bytes() == CONTENT
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(bad, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["f.bin"]  # no g.bin, no .part
    (tmp_path / "cache" / "f.bin").write_bytes(b"tampered")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(good, tmp_path / "cache")  # an existing file is verified too


def test_unreachable_mirror_is_one_data_error(tmp_path: Path) -> None:
    missing = RemoteFile("x", (tmp_path / "nowhere").as_uri(), "md5:" + "0" * 32)
    with pytest.raises(DataError, match="download of"):
        fetch(missing, tmp_path / "cache")


def test_download_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not download_requested(False) and download_requested(True)
    monkeypatch.setenv("FEDLOOM_DOWNLOAD", "1")
    assert download_requested(False)


def test_extract_refuses_paths_outside(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "x")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract(archive, tmp_path / "out")
    extract(archive, tmp_path / "out2", ["ok/file.txt"])
    assert (tmp_path / "out2" / "ok" / "file.txt").is_file()
