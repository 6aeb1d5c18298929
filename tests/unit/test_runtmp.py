"""mclu.runtmp: one private temporary directory per run, and removing those of runs gone."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mclu import runtmp


@pytest.fixture(autouse=True)
def tmpdir_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$TMPDIR is the test's own directory (tempfile caches it in tempfile.tempdir)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def run_dir(parent: Path, pid: int, start: str | None, name: str = "x") -> Path:
    """A run directory as another run made it."""
    path = parent / f"{runtmp.PREFIX}{pid}-{name}"
    path.mkdir(mode=0o700)
    (path / runtmp.OWNER_FILE).write_text(f"{pid} {start or '-'}\n")
    (path / f"{runtmp.HOSTKEYS_PREFIX}a").mkdir()
    (path / f"{runtmp.HOSTKEYS_PREFIX}a" / "ssh_host_ed25519_key").write_text("private")
    return path


def test_the_run_directory_is_made_when_first_needed_private_and_owned(tmp_path: Path) -> None:
    with runtmp.scope() as run:
        assert list(tmp_path.iterdir()) == []  # nothing until something needs it
        keys = Path(run.mkdtemp(runtmp.HOSTKEYS_PREFIX))
        assert run.path.parent == tmp_path
        assert run.path.name.startswith(f"{runtmp.PREFIX}{os.getpid()}-")
        assert mode(run.path) == 0o700 and mode(keys) == 0o700
        owner = runtmp.read_owner(run.path)
        assert owner == runtmp.Owner(os.getpid(), runtmp.start_time(os.getpid()))
        assert runtmp.alive(owner)
    assert list(tmp_path.iterdir()) == []


def test_it_goes_on_an_error_too_with_what_it_lists_outside(tmp_path: Path) -> None:
    outside = tmp_path / "libguestfsXYZ"
    outside.mkdir()
    (outside / "guestfsd.sock").write_text("")

    def fail() -> None:
        with runtmp.scope() as run:
            run.mkdtemp("ham1-")
            run.record_outside(str(outside))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail()
    assert list(tmp_path.iterdir()) == []


def test_scopes_nest_into_one_directory_and_tempdir_removes_its_own(tmp_path: Path) -> None:
    with runtmp.scope() as outer:
        with runtmp.tempdir("ham1-") as one, runtmp.scope() as inner:
            assert inner is outer is runtmp.current()
            assert Path(one).parent == outer.path
        assert not Path(one).exists()
        assert outer.path.exists()  # the outer scope's to remove
    with pytest.raises(RuntimeError):
        runtmp.current()


def test_a_dead_runs_directory_is_removed_a_live_ones_kept(tmp_path: Path) -> None:
    dead = run_dir(tmp_path, dead_pid(), "12345", "dead")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = run_dir(tmp_path, sleeper.pid, runtmp.start_time(sleeper.pid), "live")
        mine = run_dir(tmp_path, os.getpid(), runtmp.start_time(os.getpid()), "mine")
        assert runtmp.sweep(dry_run=True) == [dead]
        assert dead.exists()
        assert runtmp.sweep() == [dead]
        assert not dead.exists() and live.exists() and mine.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert runtmp.sweep() == [live]


def test_a_reused_pid_does_not_keep_a_dead_runs_directory(tmp_path: Path) -> None:
    """The pid is alive, but it is another process than the one that made the directory."""
    reused = run_dir(tmp_path, os.getpid(), "1", "reused")
    assert runtmp.stale() == [reused]


def test_a_directory_without_owner_is_left_while_it_may_be_being_made(tmp_path: Path) -> None:
    young = tmp_path / f"{runtmp.PREFIX}1-young"
    young.mkdir()
    assert runtmp.stale() == []
    old = time.time() - runtmp.UNOWNED_MIN_AGE - 5
    os.utime(young, (old, old))
    assert runtmp.stale() == [young]


def test_other_names_and_files_are_not_touched(tmp_path: Path) -> None:
    (tmp_path / "mclu-locks-0").mkdir()
    (tmp_path / f"{runtmp.PREFIX}file").write_text("not a directory")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / runtmp.OWNER_FILE).write_text(f"{dead_pid()} 1\n")
    (tmp_path / f"{runtmp.PREFIX}link").symlink_to(elsewhere, target_is_directory=True)
    assert runtmp.sweep() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere",
        "mclu-locks-0",
        f"{runtmp.PREFIX}file",
        f"{runtmp.PREFIX}link",
    ]


def test_the_next_run_removes_a_killed_runs_directory(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its directory; the next one to make one sweeps it."""
    code = (
        "import sys, time; from mclu import runtmp\n"
        "with runtmp.scope() as run:\n"
        "    run.mkdtemp(runtmp.HOSTKEYS_PREFIX)\n"
        "    print(run.path, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.stdout is not None
    left = Path(proc.stdout.readline().strip())
    assert left.parent == tmp_path
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert left.exists()
    with runtmp.scope() as run:
        run.mkdtemp("ham1-")
        assert not left.exists()
        assert list(tmp_path.iterdir()) == [run.path]


def test_a_socket_path_is_in_the_run_directory_and_goes_with_its_block(tmp_path: Path) -> None:
    with runtmp.scope() as run, runtmp.socket_path("ham1-") as path:
        assert Path(path).parent == run.path
        assert len(os.fsencode(path)) <= runtmp.SUN_PATH_MAX
        Path(path).write_text("")  # as the listener makes it
    assert list(tmp_path.iterdir()) == []


def test_a_socket_path_too_long_for_tmpdir_goes_to_tmp_and_with_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with runtmp.scope() as run:
        with runtmp.socket_path("ham1-") as path:
            assert path.startswith("/tmp/mclu-sock-")
            assert len(os.fsencode(path)) <= runtmp.SUN_PATH_MAX
            assert mode(Path(path).parent) == 0o700
            outside = Path(path).parent
        assert not outside.exists()
        # Killed inside the block: the directory is listed in the run directory, to go with it.
        with runtmp.socket_path("ham1-") as path:
            outside = Path(path).parent
            run.remove()
            assert not outside.exists()


def test_making_the_run_directory_sweeps_unless_told_not_to(tmp_path: Path) -> None:
    dead = run_dir(tmp_path, dead_pid(), "1", "dead")
    with runtmp.scope() as run:
        run.sweep_when_made = False  # `mclu cleanup --dry-run`
        run.mkdtemp("ham1-")
        assert dead.exists()
    with runtmp.scope() as run:
        run.mkdtemp("ham1-")
        assert not dead.exists()
