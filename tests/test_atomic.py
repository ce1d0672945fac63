"""Atomic writes: whole files and staged directories appear in one rename or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.results import atomic


def test_write_text_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic.write_text(target, "new")
    atomic.write_text(tmp_path / "b.json", "agent", mode=0o600)
    assert target.read_text() == "new"
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_staged_dir_publishes_on_success_only(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic.staged_dir(dest) as staging:
        (staging / "bin").write_text("1")
    assert (dest / "bin").read_text() == "1"
    with pytest.raises(RuntimeError), atomic.staged_dir(dest) as staging:
        (staging / "bin").write_text("2")
        raise RuntimeError("build failed")
    assert (dest / "bin").read_text() == "1"
    with atomic.staged_dir(dest, replace=False) as staging:
        (staging / "bin").write_text("3")
    assert (dest / "bin").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
