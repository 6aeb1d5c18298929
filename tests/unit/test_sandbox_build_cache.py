"""The sandboxes' shared cache of built templates (mclu.sandbox.images.build_cache), with the
build itself replaced by one that writes a small file and counts its calls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mclu.sandbox.images import build, build_cache, recipes


class FakeBuilds:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self,
        recipe: recipes.Recipe,
        inputs: dict[str, str],
        out_dir: Path,
        work_dir: Path,
        log_path: Path,
        keep_fds: tuple[int, ...] = (),
    ) -> build.BuiltImage:
        self.calls += 1
        data = f"{recipe.name} build {self.calls}".encode()
        (out_dir / f"{recipe.name}.xz").write_bytes(data)
        return build.BuiltImage(
            file=f"{recipe.name}.xz",
            size=1 << 20,
            allocated=len(data),
            compressed_size=len(data),
            checksum=hashlib.sha512(data).hexdigest(),
            seconds=1.0,
        )


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> FakeBuilds:
    fake = FakeBuilds()
    monkeypatch.setattr(build, "build_template", fake)
    return fake


def run(tmp_path: Path, out: str, key: str = "k" * 64, force: bool = False) -> build.BuiltImage:
    out_dir = tmp_path / out
    out_dir.mkdir(exist_ok=True)
    return build_cache.build(
        recipes.TINY, {}, key, out_dir, tmp_path, tmp_path / "log", force=force
    )


def test_without_the_setting_each_state_dir_builds(
    builds: FakeBuilds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(build_cache.BUILD_CACHE_ENV, raising=False)
    run(tmp_path, "a")
    run(tmp_path, "b")
    assert builds.calls == 2


def test_a_key_is_built_once_and_its_file_shared(
    builds: FakeBuilds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(build_cache.BUILD_CACHE_ENV, str(tmp_path / "cache"))
    first, second = run(tmp_path, "a"), run(tmp_path, "b")
    assert builds.calls == 1
    assert first == second
    a, b = tmp_path / "a" / "tiny.xz", tmp_path / "b" / "tiny.xz"
    assert a.read_bytes() == b.read_bytes() == b"tiny build 1"
    assert a.stat().st_ino == b.stat().st_ino  # a hard link: no second copy on disk
    run(tmp_path, "c", key="x" * 64)  # another key (an input changed): built
    assert builds.calls == 2


def test_a_damaged_entry_is_built_again(
    builds: FakeBuilds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(build_cache.BUILD_CACHE_ENV, str(tmp_path / "cache"))
    run(tmp_path, "a")
    (cached,) = (tmp_path / "cache").glob("*.xz")
    cached.unlink()
    cached.write_bytes(b"truncated")
    assert run(tmp_path, "b").checksum == hashlib.sha512(b"tiny build 2").hexdigest()
    assert builds.calls == 2
    assert (tmp_path / "b" / "tiny.xz").read_bytes() == b"tiny build 2"


def test_force_builds_and_replaces_the_entry(
    builds: FakeBuilds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(build_cache.BUILD_CACHE_ENV, str(tmp_path / "cache"))
    run(tmp_path, "a")
    run(tmp_path, "b", force=True)
    run(tmp_path, "c")
    assert builds.calls == 2
    assert (tmp_path / "c" / "tiny.xz").read_bytes() == b"tiny build 2"
    assert (tmp_path / "a" / "tiny.xz").read_bytes() == b"tiny build 1"  # untouched
