"""The `stream` transport: the image zstd-compressed over an ssh channel into a sparse writer.

The source is read and compressed here (the `zstandard` package, multi-threaded; faster on
the machines measured than piping through a local `zstd`, and no pipe copies) and streamed as
the stdin of `zstd -d --sparse -o DEST` on the host, over the session's own connection, with
back-pressure: never more than a few chunks in memory. zstd writes runs of zeros as holes;
`truncate` then gives the file its size, so trailing holes count too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from mclu.hosts import commands
from mclu.hosts.session import Session

CHUNK = 4 << 20  # bytes read and compressed per step; 256 progress calls per GiB
MIN_RATE = 1 << 20  # bytes per second below which a transfer counts as hung


@dataclass(frozen=True)
class Stream:
    """Compressed stream into `zstd -d --sparse` on the host."""

    level: int = 1  # zstd level: 1 compresses 1 GiB in about 1.5 s on 2 cores
    zstd: str = "zstd"  # the host's zstd; a parameter so tests can name a missing one
    name: str = "stream"

    async def send(
        self,
        session: Session,
        source: Path,
        dest: str,
        size: int,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Write source to dest on the host (see mclu.images.Transport.send)."""
        source_size = check_size(source, size)
        async with contextlib.aclosing(compressed(source, self.level, progress)) as chunks:
            await session.run(
                commands.zstd_receive(dest, self.zstd),
                input=chunks,
                timeout=transfer_timeout(source_size),
            )
        await session.run(commands.set_size(dest, size))


def check_size(source: Path, size: int) -> int:
    """source's size in bytes; ValueError when it does not fit in size."""
    source_size = source.stat().st_size
    if source_size > size:
        raise ValueError(f"{source} has {source_size} bytes, more than the size {size}")
    return source_size


def transfer_timeout(size: int) -> float:
    """A bound on moving size bytes: only a hung transfer takes longer."""
    return 60.0 + size / MIN_RATE


class _Frames:
    """A file as zstd frames, chunk by chunk: data compressed (multi-threaded), and a chunk of
    zeros, a hole's or written ones, as a tiny ready-made frame, never compressed. `zstd -d`
    reads concatenated frames as one stream."""

    def __init__(self, level: int) -> None:
        self._compressor = zstandard.ZstdCompressor(level=level, threads=-1)
        self._frame: Any = None  # the compressobj of the data frame under way
        self._zero_frames: dict[int, bytes] = {}

    def data(self, chunk: memoryview) -> bytes:
        if self._frame is None:
            self._frame = self._compressor.compressobj()
        return bytes(self._frame.compress(chunk))

    def zeros(self, n: int) -> bytes:
        frame = self._zero_frames.get(n)
        if frame is None:
            frame = zstandard.ZstdCompressor(level=1).compress(bytes(n))
            self._zero_frames[n] = frame
        return self.finish() + frame

    def finish(self) -> bytes:
        """The end of the data frame under way, if any."""
        if self._frame is None:
            return b""
        out, self._frame = bytes(self._frame.flush()), None
        return out


async def compressed(
    source: Path, level: int, progress: Callable[[int], None] | None = None
) -> AsyncGenerator[bytes, None]:
    """source as zstd frames, in chunks; progress gets the bytes of source consumed so far.

    Holes are skipped (SEEK_DATA) and all-zero chunks sent as a ready-made frame: 2 cores
    spend their time on data only. Reading and compressing run in a worker thread
    (zstandard releases the GIL), one chunk ahead, so the next chunk is compressed while the
    event loop sends this one.
    """
    frames = _Frames(level)
    buffer = bytearray(CHUNK)
    done = 0

    def step(file: int, offset: int, size: int) -> tuple[int, bytes]:
        n = min(CHUNK, size - offset)
        if n <= 0:
            return 0, frames.finish()
        if _next_data(file, offset, size) >= offset + n:
            return n, frames.zeros(n)
        n = os.preadv(file, [memoryview(buffer)[:n]], offset)
        if n == 0:  # the file shrank under us: stop at its new end
            return 0, frames.finish()
        if (buffer if n == CHUNK else buffer[:n]) == _ZEROS[:n]:
            return n, frames.zeros(n)
        return n, frames.data(memoryview(buffer)[:n])

    file = os.open(source, os.O_RDONLY)
    try:
        size = os.fstat(file).st_size
        # Leaving the executor waits for a step under way (one chunk), so that a cancelled
        # transfer never closes the file under the worker.
        with concurrent.futures.ThreadPoolExecutor(1, "mclu-zstd") as worker:
            pending = worker.submit(step, file, 0, size)
            while True:
                n, out = await asyncio.wrap_future(pending)
                if n > 0:  # the next chunk, while this one is sent
                    pending = worker.submit(step, file, done + n, size)
                if out:
                    yield out
                if n == 0:
                    return
                done += n
                if progress is not None:
                    progress(done)
    finally:
        os.close(file)


_ZEROS = bytes(CHUNK)


def _next_data(file: int, offset: int, size: int) -> int:
    """Where the next data at or after offset starts (size when only a hole follows)."""
    try:
        return os.lseek(file, offset, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return size
        raise
