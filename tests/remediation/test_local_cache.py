"""cache.clear: confined to the allowed roots, never follows symlinks, rollback restores what it removed."""

import os
from pathlib import Path

import pytest
from rest_framework.exceptions import ValidationError

from remediation.actions import load_all
from remediation.actions.base import ActionError, ActionRefused

ACTION = load_all().get("cache.clear")


@pytest.fixture
def managed(settings, tmp_path):
    root = tmp_path / "managed"
    root.mkdir()
    settings.GRACE_ALLOWED_ROOTS = [str(root)]
    return root


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "precious.txt").write_text("must survive")
    (directory / "sub").mkdir()
    (directory / "sub" / "deep.txt").write_text("also must survive")
    return directory


@pytest.fixture
def cache(managed):
    directory = managed / "app" / "cache"
    (directory / "nested" / "deeper").mkdir(parents=True)
    (directory / "a.bin").write_bytes(os.urandom(2048))
    (directory / "nested" / "b.json").write_text('{"k": 1}')
    (directory / "nested" / "deeper" / "c.txt").write_text("c")
    os.chmod(directory / "nested" / "b.json", 0o640)
    return directory


def tree(directory: Path) -> dict:
    """Everything under a directory: files by content, links by target, directories by mode."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def run(params: dict) -> dict:
    return ACTION.execute(ACTION.validate(params))


def test_it_empties_the_cache_directory_and_keeps_the_directory(cache):
    result = run({"path": str(cache)})

    assert cache.is_dir()
    assert list(cache.iterdir()) == []
    assert result == {"removed_files": 3, "removed_dirs": 2, "removed_bytes": 2048 + 8 + 1}
    assert ACTION.observe({"path": str(cache)}) | {"path": ""} == {
        "path": "",
        "exists": True,
        "file_count": 0,
        "dir_count": 0,
        "bytes": 0,
    }


def test_observe_counts_files_and_bytes_without_changing_anything(cache):
    before = tree(cache)

    facts = ACTION.observe({"path": str(cache)})

    assert facts["exists"] is True
    assert facts["file_count"] == 3
    assert facts["bytes"] == 2048 + 8 + 1
    assert tree(cache) == before


def test_observe_reports_a_missing_cache_directory(managed):
    facts = ACTION.observe({"path": str(managed / "nope")})

    assert facts["exists"] is False


def test_a_relative_path_is_a_field_error():
    with pytest.raises(ValidationError) as exc:
        ACTION.validate({"path": "app/cache"})

    assert "path" in exc.value.detail


def test_dot_dot_is_refused_and_nothing_is_deleted(cache, outside):
    before, outside_before = tree(cache), tree(outside)

    with pytest.raises(ActionRefused, match=r"'\.\.' is not allowed"):
        run({"path": f"{cache}/../../../outside"})

    assert tree(cache) == before
    assert tree(outside) == outside_before


def test_dot_dot_that_stays_inside_is_refused_too(cache):
    before = tree(cache)

    with pytest.raises(ActionRefused):
        run({"path": f"{cache}/nested/.."})

    assert tree(cache) == before


def test_an_absolute_path_outside_the_roots_is_refused_and_nothing_is_deleted(cache, outside):
    outside_before = tree(outside)

    with pytest.raises(ActionRefused, match="outside the allowed roots"):
        run({"path": str(outside)})

    assert tree(outside) == outside_before


def test_a_symlinked_directory_leading_out_is_refused_and_nothing_is_deleted(managed, outside):
    link = managed / "linked-cache"
    link.symlink_to(outside, target_is_directory=True)
    outside_before = tree(outside)

    with pytest.raises(ActionRefused, match="outside the allowed roots"):
        run({"path": str(link)})
    with pytest.raises(ActionRefused):
        run({"path": str(link / "sub")})

    assert tree(outside) == outside_before
    assert link.is_symlink()


def test_a_symlink_inside_the_cache_leading_out_is_refused_and_nothing_is_deleted(cache, outside):
    (cache / "nested" / "evil").symlink_to(outside / "precious.txt")
    (cache / "evil-dir").symlink_to(outside, target_is_directory=True)
    before, outside_before = tree(cache), tree(outside)

    with pytest.raises(ActionRefused, match="leads outside the allowed roots; nothing was deleted"):
        run({"path": str(cache)})

    assert tree(cache) == before
    assert tree(outside) == outside_before


def test_a_symlink_leading_elsewhere_inside_the_roots_is_removed_as_a_link_not_followed(managed, cache):
    keep = managed / "app" / "data"
    keep.mkdir()
    (keep / "db.txt").write_text("not cache")
    (cache / "to-data").symlink_to(keep, target_is_directory=True)

    run({"path": str(cache)})

    assert not (cache / "to-data").exists()
    assert (keep / "db.txt").read_text() == "not cache"


def test_an_allowed_root_itself_is_refused(managed, cache):
    before = tree(managed)

    with pytest.raises(ActionRefused, match="allowed root itself"):
        run({"path": str(managed)})

    assert tree(managed) == before


def test_a_file_is_not_a_cache_directory(cache):
    with pytest.raises(ActionRefused, match="not a directory"):
        run({"path": str(cache / "a.bin")})

    assert (cache / "a.bin").exists()


def test_rollback_restores_what_the_clear_removed(cache, managed, tmp_path):
    (cache / "nested" / "inside-link").symlink_to(managed / "app")
    before = tree(cache)
    snapshot_dir = tmp_path / "snapshot"
    snapshot_dir.mkdir()
    params = ACTION.validate({"path": str(cache)})

    state = ACTION.snapshot(params, snapshot_dir)
    ACTION.execute(params)
    (cache / "written-after-the-clear").write_text("new")
    result = ACTION.rollback(params, state, snapshot_dir)

    assert tree(cache) == before
    assert result["restored_files"] == 4
    assert state["bytes"] == 2048 + 8 + 1


def test_a_cache_above_the_snapshot_cap_is_refused_unless_the_step_allows_no_snapshot(settings, cache, tmp_path):
    settings.GRACE_CACHE_SNAPSHOT_MAX_BYTES = 100
    before = tree(cache)

    with pytest.raises(ActionRefused, match="GRACE_CACHE_SNAPSHOT_MAX_BYTES"):
        ACTION.snapshot(ACTION.validate({"path": str(cache)}), tmp_path)
    assert tree(cache) == before

    params = ACTION.validate({"path": str(cache), "allow_unsnapshotted": True})
    state = ACTION.snapshot(params, tmp_path)
    ACTION.execute(params)
    assert state["skipped"] is True
    with pytest.raises(ActionError, match="nothing to restore"):
        ACTION.rollback(params, state, tmp_path)


def test_rollback_refuses_a_snapshot_of_another_directory(cache, managed, tmp_path):
    other = managed / "other"
    other.mkdir()
    state = ACTION.snapshot(ACTION.validate({"path": str(cache)}), tmp_path)

    with pytest.raises(ActionRefused, match="snapshot is of"):
        ACTION.rollback(ACTION.validate({"path": str(other)}), state, tmp_path)
