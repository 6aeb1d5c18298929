"""The controller's cache of template base images: downloaded once, checked, kept raw and sparse.

A base is fetched from its repository, its sha512 checked against the index while it
streams in, decompressed into a sparse raw file, and linked into place only when whole, so
an interrupted download never leaves a file that looks finished. Its name carries the first
digits of that sha512 (`model.BaseImage.cache_name`): a repository that publishes a revision
again with other content gets a file of its own, and no cached file is ever replaced. A lock
file serialises mclu runs that want the same cache. The cache is private to its user
whatever the umask: the directory 0700, every file mclu writes in it 0600. `templates prune`
removes the bases no repository lists any more (`ages`, `remove`). Blocking: call from a
thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from mclu import errors, model

CHUNK = 1 << 20
_ZERO = bytes(CHUNK)
_DECOMPRESSORS = {".xz": ["xz", "-dc", "-T0"], ".gz": ["gzip", "-dc"], ".zst": ["zstd", "-dcq"]}

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)


@dataclass(frozen=True)
class LocalBase:
    """A base image ready to send: a sparse raw file on the controller."""

    path: Path
    size: int  # virtual size
    data_bytes: int  # allocated bytes: what a sparse-aware transfer moves


def cache_dir(environ: Mapping[str, str]) -> Path:
    """$MCLU_CACHE, else $XDG_CACHE_HOME/mclu, else ~/.cache/mclu."""
    if environ.get("MCLU_CACHE"):
        return Path(environ["MCLU_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "mclu"


def names(directory: Path) -> frozenset[str]:
    """The names of the bases in the cache known by their content (none when it has none).

    A base cached by name and revision only (mclu before digests) is left out: its content
    may not be what a host's file of the same name holds, so it is never sent for one.
    """
    return frozenset(n for n in ages(directory) if model.content_named(n))


def ages(directory: Path) -> dict[str, float]:
    """Every base file in the cache (old-style names too) → seconds since it was last
    modified; {} when there is no cache."""
    now = time.time()
    found = {}
    try:
        for path in directory.iterdir():
            if path.name.startswith(".") or not path.name.endswith(".raw"):
                continue  # the lock, downloads under way
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    found[path.name] = max(now - st.st_mtime, 0.0)
    except OSError:
        return {}
    return found


def remove(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """Delete these bases from the cache (one already gone is no error), holding the cache's
    lock so no download is under way; returns the ones that could not be deleted, each with
    why (the others are gone)."""
    names = tuple(names)
    failed = {}
    try:
        with _locked(directory):
            for name in names:
                if "/" in name or name.startswith("."):
                    raise ValueError(f"not a cached base's name: {name!r}")
                try:
                    (directory / name).unlink(missing_ok=True)
                except OSError as e:
                    failed[name] = e.strerror or str(e)
    except OSError as e:  # the cache's lock
        return {name: e.strerror or str(e) for name in names}
    return failed


def cached(template: model.ResolvedTemplate, directory: Path) -> LocalBase | None:
    """The cached base of `template`, if it is there already (nothing is fetched)."""
    path = directory / template.base.cache_name
    return _local(path) if path.is_file() else None


def ensure(
    template: model.ResolvedTemplate, directory: Path, progress: Progress | None = None
) -> LocalBase:
    """The template's base in the cache, fetching, checking and unpacking it if needed."""
    private_dir(directory)
    with _locked(directory):
        found = cached(template, directory)
        if found is not None:
            return found
        target = directory / template.base.cache_name
        with tempfile.TemporaryDirectory(dir=directory, prefix=".partial-") as work:
            download = Path(work) / ("image" + _suffix(template.source_uri))
            _download(template.source_uri, template.sha512, download, progress)
            raw = Path(work) / "image.raw"
            _unpack(download, raw, template.base.size)
            # Linked, never renamed over: a file of this name is this content already.
            with contextlib.suppress(FileExistsError):
                os.link(raw, target)
        return _local(target)


def private_dir(directory: Path) -> None:
    """Make `directory` (and missing parents) and leave it 0700, as older versions may not."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)


def _create_private(path: Path) -> BinaryIO:
    """A new (or emptied) file for writing, 0600 from the start, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


def _local(path: Path) -> LocalBase:
    st = path.stat()
    return LocalBase(path=path, size=st.st_size, data_bytes=st.st_blocks * 512)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _suffix(uri: str) -> str:
    return next((s for s in _DECOMPRESSORS if uri.endswith(s)), "")


def _download(uri: str, sha512: str, dest: Path, progress: Progress | None) -> None:
    digest = hashlib.sha512()
    try:
        with _open_uri(uri) as source, _create_private(dest) as out:
            total = int(getattr(source, "length", 0) or 0)
            done = 0
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except OSError as e:
        raise errors.SourceUnavailable(uri=uri, reason=str(getattr(e, "reason", e))) from None
    if digest.hexdigest() != sha512:
        raise errors.ChecksumMismatch(uri=uri, expected=sha512, got=digest.hexdigest())


def _open_uri(uri: str) -> BinaryIO:
    if "://" not in uri:
        return open(uri, "rb")
    response: BinaryIO = urllib.request.urlopen(uri, timeout=60)
    return response


def _unpack(source: Path, dest: Path, size: int) -> None:
    """Decompress (or copy) `source` into `dest`, leaving holes where the data is zero."""
    argv = _DECOMPRESSORS.get(source.suffix)
    if argv is None:
        with open(source, "rb") as data:
            _write_sparse(data, dest, size)
        return
    with subprocess.Popen(
        [*argv, str(source)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        _write_sparse(proc.stdout, dest, size)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        tool = shutil.which(argv[0]) or argv[0]
        raise errors.SourceUnavailable(uri=str(source), reason=f"{tool} failed: {stderr.strip()}")


def _write_sparse(data: IO[bytes], dest: Path, size: int) -> None:
    """Copy a stream into a file, seeking over all-zero chunks so they stay holes."""
    with _create_private(dest) as out:
        while chunk := _read_full(data, CHUNK):
            if chunk == _ZERO[: len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
        out.truncate(max(out.tell(), size))
        out.flush()
        os.fsync(out.fileno())


def _read_full(data: IO[bytes], n: int) -> bytes:
    """Up to n bytes, reading again after short reads from a pipe."""
    parts = []
    while n > 0 and (part := data.read(n)):
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
