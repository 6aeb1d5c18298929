"""`commands.write_new_file`'s script, run by this machine's sh: what it leaves when the file
exists, when it is new, and when the write fails (the contract suite runs the first two on a
sandbox host; a failed write cannot be provoked there without filling a disk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO

from mclu.hosts import commands


def write(path: Path, stdin: int | IO[bytes]) -> int:
    return subprocess.run(commands.write_new_file(str(path)), stdin=stdin, check=False).returncode


def test_a_new_file_gets_the_input_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "web1.mclu-seed.iso"
    read, send = os.pipe()
    os.write(send, b"cidata")
    os.close(send)
    assert write(path, read) == 0
    assert path.read_bytes() == b"cidata" and path.stat().st_mode & 0o777 == 0o600


def test_an_existing_file_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "web1.mclu-seed.iso"
    path.write_bytes(b"theirs")
    with open(os.devnull, "rb") as empty:
        assert write(path, empty) != 0
    assert path.read_bytes() == b"theirs"


def test_a_write_that_fails_leaves_no_file(tmp_path: Path) -> None:
    """Its input unreadable (cat: a directory), as a full disk would fail it: the part made
    is removed, since no undo knows of it yet."""
    path = tmp_path / "web1.mclu-seed.iso"
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert write(path, fd) != 0
    finally:
        os.close(fd)
    assert not path.exists()
