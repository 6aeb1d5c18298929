"""`mclu templates import`: a user's disk image made into a template of their own repository.

The source (a path, or an http(s) URL downloaded into the run's private directory) is checked
against the checksum given, unpacked if compressed, its format found from its content
(decide.image_format), probed with `qemu-img info` under resource limits, refused if it would
make qemu-img read any other file, converted to raw with the format named explicitly, and
compressed with xz in 16 MiB blocks (multi-threaded, seekable) into the user's repository,
whose virt-builder index then gains the new revision: the index is rewritten aside and renamed
over the old one only once the image file is whole, so a failure leaves the repository as it
was.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mclu import errors
from mclu.config import fields, repo_index
from mclu.decide import image_format
from mclu.images import import_inspect

CHUNK = 1 << 20
FETCH_TIMEOUT = 60.0
INDEX = "index"
SIGNED_INDEX = "index.asc"  # the index clear-signed with the user's key, when they sign
PUBLIC_KEY = "key.asc"  # that key's public half, the .conf's gpgkey=
SIGNING_KEY = "signing-key"  # the key (as gpg names it) imports sign with, once given
CONF_NAME = "mclu-local.conf"
SOURCE_NAME = "mclu-local"
XZ = ["xz", "--compress", "--block-size=16MiB", "--threads=0", "--stdout"]
# qemu-img reading an untrusted image: bounded memory and CPU time, and a deadline.
PROBE_MEMORY = 1 << 30
PROBE_CPU_SECONDS = 30
PROBE_TIMEOUT = 120.0
CONVERT_MEMORY = 4 << 30  # convert runs coroutines and threads: more address space
_ZERO = bytes(CHUNK)
# The import's stop event, seen by every program it runs (import_image sets it in its thread).
_stop: contextvars.ContextVar[threading.Event] = contextvars.ContextVar("mclu_import_stop")
_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")

# The appliance's look at a disk (import_inspect.inspect's signature; tests stand in for it).
Inspect = Callable[[str, Path, Path, Callable[[], None]], import_inspect.Inspection]

# Progress: the phase ("downloading", "checking", "unpacking", "converting", "inspecting",
# "compressing"),
# bytes done, bytes in all (0: unknown). Called often from the importing thread, and last just
# before the new revision is committed: it may raise Stopped there to have the import undone.
Progress = Callable[[str, int, int], None]


class Stopped(Exception):
    """Raised by a Progress callback when the caller wants the import stopped (Ctrl-C,
    SIGTERM): the programs it runs are killed and nothing is kept."""


@dataclass(frozen=True)
class Request:
    source: str  # a path or an http(s) URL
    name: str
    description: str = ""
    checksum: tuple[str, str] | None = None  # ("sha256" or "sha512", hex digest)
    revision_above: int = 0  # the newest revision of `name` any source already has
    arch: str = "x86_64"
    sign_key: str | None = None  # sign the index with this gpg key (and from then on)


@dataclass(frozen=True)
class Imported:
    name: str
    revision: int
    format: str  # as found: qcow2, raw, vmdk, vdi
    compression: str | None  # around it: xz, gzip, zstd, bzip2
    virtual_size: int
    allocated_size: int
    required_size: int  # the room a host needs for it (qemu-img measure)
    compressed_size: int
    sha512: str
    file: str  # the image file in the repository
    index: str  # the repository's index
    signed_by: str | None = None  # the gpg key that signed index.asc, None: unsigned
    root: str = ""  # the OS root libguestfs found, e.g. /dev/sda1
    os_name: str = ""  # its os-release name
    cloud_init: tuple[str, ...] = ()  # the cloud-init files it holds: cloud-init can personalise


def data_home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(environ.get("XDG_DATA_HOME") or Path(home) / ".local" / "share")


def repository_dir(environ: Mapping[str, str]) -> Path:
    """The user's own repository: $XDG_DATA_HOME/mclu/images (~/.local/share/mclu/images)."""
    return data_home(environ) / "mclu" / "images"


def conf_text(repository: Path, signed: bool = False) -> str:
    """The repos.d .conf that makes mclu and virt-builder see the repository: its signed
    index and the key to check it with, or its plain index."""
    if signed:
        index, key = (repository / SIGNED_INDEX).as_uri(), (repository / PUBLIC_KEY).as_uri()
        return f"[{SOURCE_NAME}]\nuri={index}\ngpgkey={key}\n"
    return f"[{SOURCE_NAME}]\nuri={(repository / INDEX).as_uri()}\n"


def write_conf(repos_d: Path, repository: Path, signed: bool = False) -> Path:
    """`repos_d/mclu-local.conf` naming the repository, written (atomically) when missing or
    different."""
    path = repos_d / CONF_NAME
    text = conf_text(repository, signed)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return path
    try:
        repos_d.mkdir(parents=True, exist_ok=True)
        _replace_text(path, text)
    except OSError as e:
        raise errors.ConfigError(path=str(path), key=None, problem=f"cannot write: {e}") from e
    return path


def newest_revision(repository: Path, name: str, arch: str = "x86_64") -> int:
    """The newest revision of `name` in the repository's index, 0 when there is none."""
    index = repository / INDEX
    try:
        text = index.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as e:
        raise errors.ConfigError(path=str(index), key=None, problem=f"cannot read: {e}") from e
    entry = repo_index.newest(repo_index.parse_index(text, index.as_uri()), name, arch)
    return entry.revision if entry else 0


def import_image(
    request: Request,
    repository: Path,
    work: Path,
    progress: Progress,
    stop: threading.Event | None = None,
    inspect: Inspect | None = None,
) -> Imported:
    """Import `request.source` as a new revision of `request.name` into `repository`, using
    the private directory `work` for what is temporary. Raises ImageRefused (the image is not
    taken: nothing kept), SourceUnavailable, LocalToolMissing, LocalCommandFailed; Stopped
    when `stop` is set (the program running is killed at once) or progress raises it.
    `inspect` looks at the raw disk in a libguestfs appliance (default
    import_inspect.inspect)."""
    _stop.set(stop or threading.Event())
    source = request.source
    path = _obtain(request, work, progress)
    head = _head(path)
    packed = image_format.compression(head)
    if packed is not None:
        path = _unpack(source, path, packed, work / "unpacked", progress)
        head = _head(path)
    found = image_format.detect(head)
    if found.format is None:
        raise errors.ImageRefused(source=source, reason=found.reason)
    info = _probe(source, path, found.format)
    measured = image_format.check_info(info, found.format, fields.MAX_DISK)
    if isinstance(measured, str):
        raise errors.ImageRefused(source=source, reason=measured)
    if found.format == "qcow2":
        _check_qcow2(source, path)
    required = _measure(source, path, found.format)
    raw = path
    if found.format != "raw":
        raw = work / "base.raw"
        _convert(source, path, found.format, raw, measured.virtual_size, progress)
    seen = _personalisable(source, raw, work, progress, inspect or import_inspect.inspect)
    repository.mkdir(parents=True, exist_ok=True)
    with _locked(repository):
        sign_key = request.sign_key or _recorded_key(repository)
        revision = max(newest_revision(repository, request.name), request.revision_above) + 1
        file_name = f"{request.name}.{request.arch}.r{revision}.xz"
        staged = Path(tempfile.mkstemp(prefix=".import-", suffix=".xz", dir=repository)[1])
        try:
            sha512, compressed = _compress(raw, staged, measured.virtual_size, progress)
            section = _section(
                request,
                revision=revision,
                file_name=file_name,
                sha512=sha512,
                size=measured.virtual_size,
                compressed=compressed,
                what=found.format if packed is None else f"{found.format} in {packed}",
                cloud_init=seen.cloud_init,
                expand=expand_partition(seen.root),
            )
            os.chmod(staged, 0o644)
            progress("compressing", measured.virtual_size, measured.virtual_size)  # last word
            os.replace(staged, repository / file_name)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        try:
            replaced = _add_to_index(repository, request.name, section, sign_key)
        except BaseException:
            (repository / file_name).unlink(missing_ok=True)
            raise
        for old in replaced:
            if old != file_name and "/" not in old:
                (repository / old).unlink(missing_ok=True)
    return Imported(
        name=request.name,
        revision=revision,
        format=found.format,
        compression=packed,
        virtual_size=measured.virtual_size,
        allocated_size=measured.allocated_size,
        required_size=required,
        compressed_size=compressed,
        sha512=sha512,
        file=str(repository / file_name),
        index=str(repository / INDEX),
        signed_by=sign_key,
        root=seen.root or "",
        os_name=seen.os_name,
        cloud_init=seen.cloud_init,
    )


# --- the source ------------------------------------------------------------------------------


def _obtain(request: Request, work: Path, progress: Progress) -> Path:
    """The source as a local file (downloaded into `work`), its checksum checked."""
    source = request.source
    algorithm = request.checksum[0] if request.checksum else "sha256"
    digest = hashlib.new(algorithm)
    if re.match(r"^https?://", source, re.IGNORECASE):
        path = work / "download"
        _download(source, path, digest, progress)
    else:
        path = Path(source.removeprefix("file://"))
        try:
            if not path.is_file():
                reason = "no such file" if not path.exists() else "not a regular file"
                raise errors.ImageRefused(source=source, reason=reason)
            if request.checksum:
                _hash_file(path, digest, progress)
        except OSError as e:
            raise errors.ImageRefused(source=source, reason=e.strerror or str(e)) from e
    if request.checksum and digest.hexdigest() != request.checksum[1].lower():
        name, expected = request.checksum
        raise errors.ImageRefused(
            source=source,
            reason=f"{name} mismatch (given {expected[:16]}..., got {digest.hexdigest()[:16]}...)",
        )
    return path


def _download(uri: str, dest: Path, digest: Any, progress: Progress) -> None:
    try:
        with (
            urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT) as response,
            open(dest, "xb") as out,
        ):
            total = int(response.length or 0)
            done = 0
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                progress("downloading", done, total)
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise errors.SourceUnavailable(uri=uri, reason=str(getattr(e, "reason", e))) from e


def _hash_file(path: Path, digest: Any, progress: Progress) -> None:
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress("checking", done, total)


def _head(path: Path, offset: int = 0) -> bytes:
    with open(path, "rb") as data:
        data.seek(offset)
        return data.read(image_format.HEAD_BYTES)


def _unpack(source: str, path: Path, packed: str, dest: Path, progress: Progress) -> Path:
    """Unpack a compressed source into `dest` (holes where it is zero), refusing one that
    unpacks to more than any host could hold."""
    argv = [*image_format.UNPACK[packed], "--", str(path)]
    total = path.stat().st_size
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise errors.LocalToolMissing(tool=argv[0], purpose=f"unpacking {packed}") from None
    with _running(proc), open(dest, "xb") as out:
        assert proc.stdout is not None and proc.stderr is not None
        err = _drain(proc.stderr)
        written = 0
        where = _Position(path, proc)
        while chunk := _read_full(proc.stdout, CHUNK):
            written += len(chunk)
            if written > fields.MAX_DISK:
                raise errors.ImageRefused(
                    source=source, reason=f"unpacks to more than any host could hold ({packed})"
                )
            if chunk == _ZERO[: len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
            progress("unpacking", min(where.get(), total), total)
        out.truncate(out.tell())
        proc.wait()
    if proc.returncode != 0:
        raise errors.ImageRefused(
            source=source,
            reason=f"{packed} data is corrupt or truncated: {errors.last_lines(err(), '')}",
        )
    return dest


class _Position:
    """How far a program has read its input file (its fd's position in /proc), for progress;
    looked up at most four times a second."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.path, self.proc = str(path.resolve()), proc
        self.last, self.value = 0.0, 0

    def get(self) -> int:
        now = time.monotonic()
        if now - self.last >= 0.25:
            self.last = now
            with contextlib.suppress(OSError, ValueError):
                for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") == self.path:
                            text = Path(f"/proc/{self.proc.pid}/fdinfo/{fd}").read_text()
                            self.value = int(text.split()[1])
        return self.value


@contextlib.contextmanager
def _running(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """The program killed when the block fails (an error, a refusal, Stopped), not waited for,
    and at once when the import's stop event is set (its output then ends: Stopped)."""
    stop = _stop.get(None) or threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            if proc.poll() is not None:
                return
        proc.kill()

    threading.Thread(target=watch, daemon=True).start()
    with proc:
        try:
            yield
        except BaseException:
            proc.kill()
            raise
    if stop.is_set():
        raise Stopped


def _drain(stream: IO[bytes]) -> Callable[[], str]:
    """Read a pipe in the background (so a chatty program never blocks); its text at the end."""
    parts: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):  # closed under it when killed
            parts.extend(iter(stream.readline, b""))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def text() -> str:
        thread.join()
        return b"".join(parts).decode(errors="replace")

    return text


def _read_full(data: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0 and (part := data.read(n)):
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


# --- qemu-img, held on a short leash -----------------------------------------------------------


def _limits(memory: int, cpu: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return apply


def _qemu_img(
    argv: list[str], memory: int, cpu: int | None, timeout: float | None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["qemu-img", *argv],
            capture_output=True,
            text=True,
            preexec_fn=_limits(memory, cpu),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise errors.LocalToolMissing(tool="qemu-img", purpose="importing images") from None


def _probe(source: str, path: Path, fmt: str) -> dict[str, Any]:
    try:
        done = _qemu_img(
            ["info", "--output=json", "-f", fmt, "--", str(path)],
            PROBE_MEMORY,
            PROBE_CPU_SECONDS,
            PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise errors.ImageRefused(source=source, reason="qemu-img info took too long") from None
    if done.returncode != 0:
        why = errors.last_lines(done.stderr, f"exit status {done.returncode}")
        raise errors.ImageRefused(source=source, reason=f"{fmt} image unreadable: {why}")
    try:
        info = json.loads(done.stdout)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise errors.ImageRefused(source=source, reason="qemu-img info said nothing readable")
    return info


def _check_qcow2(source: str, path: Path) -> None:
    try:
        done = _qemu_img(
            ["check", "-f", "qcow2", "--", str(path)],
            PROBE_MEMORY,
            PROBE_CPU_SECONDS,
            PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise errors.ImageRefused(source=source, reason="qemu-img check took too long") from None
    reason = image_format.check_result(done.returncode)
    if reason is not None:
        why = errors.last_lines(done.stderr or done.stdout, "")
        raise errors.ImageRefused(source=source, reason=f"{reason}: {why}" if why else reason)


def _measure(source: str, path: Path, fmt: str) -> int:
    """The room a host needs for the image: `qemu-img measure`'s "required" for a qcow2 of
    it (its data and what holds it; hosts keep bases sparse), under the probe's limits."""
    try:
        done = _qemu_img(
            ["measure", "--output=json", "-f", fmt, "-O", "qcow2", "--", str(path)],
            PROBE_MEMORY,
            PROBE_CPU_SECONDS,
            PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise errors.ImageRefused(source=source, reason="qemu-img measure took too long") from None
    if done.returncode != 0:
        why = errors.last_lines(done.stderr, f"exit status {done.returncode}")
        raise errors.ImageRefused(source=source, reason=f"{fmt} image unreadable: {why}")
    try:
        required = image_format.parse_measure(json.loads(done.stdout))
    except ValueError:
        required = "qemu-img measure said nothing readable"
    if isinstance(required, str):
        raise errors.ImageRefused(source=source, reason=required)
    return required


def _convert(source: str, path: Path, fmt: str, dest: Path, size: int, progress: Progress) -> None:
    """`qemu-img convert -f FMT -O raw`, only ever after the probe found nothing it would
    follow; its -p percentages become progress."""
    argv = ["qemu-img", "convert", "-p", "-f", fmt, "-O", "raw", "--", str(path), str(dest)]
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(CONVERT_MEMORY, None),
        )
    except FileNotFoundError:
        raise errors.LocalToolMissing(tool="qemu-img", purpose="importing images") from None
    with _running(proc):
        assert proc.stdout is not None and proc.stderr is not None
        err = _drain(proc.stderr)
        while chunk := os.read(proc.stdout.fileno(), 4096):  # "    (12.34/100%)\r" as it goes
            percents = re.findall(rb"\(([0-9.]+)/100%\)", chunk)
            if percents:
                progress("converting", int(size * float(percents[-1]) / 100), size)
        proc.wait()
    if proc.returncode != 0:
        why = errors.last_lines(err(), f"exit status {proc.returncode}")
        raise errors.ImageRefused(source=source, reason=f"{fmt} image unreadable: {why}")


# --- can anything personalise it? -------------------------------------------------------------


def _personalisable(
    source: str, raw: Path, work: Path, progress: Progress, inspect: Inspect
) -> import_inspect.Inspection:
    """What the raw disk holds, refused when neither libguestfs nor cloud-init could
    personalise it: at once when its own bytes show no volume that could hold an OS root
    (only FAT, swap, nothing), else after one libguestfs appliance looked."""
    stop = _stop.get(None) or threading.Event()

    def tick() -> None:
        if stop.is_set():
            raise Stopped
        progress("inspecting", 0, 0)

    tick()
    found = image_format.layout(_head(raw))
    volumes = [image_format.filesystem(_head(raw, start)) for start in found.starts]
    reason = image_format.without_root(found, volumes)
    if reason is not None:
        raise errors.ImageRefused(source=source, reason=reason)
    tmpdir = work / "guestfs"
    tmpdir.mkdir(exist_ok=True)
    seen = inspect(source, raw, tmpdir, tick)
    reason = image_format.inspected(found, list(seen.filesystems.values()), seen.root, seen.has_etc)
    if reason is not None:
        raise errors.ImageRefused(source=source, reason=reason)
    return seen


# --- into the repository ---------------------------------------------------------------------


def _compress(raw: Path, dest: Path, size: int, progress: Progress) -> tuple[str, int]:
    """xz the raw disk into `dest` (16 MiB blocks: multi-threaded, and seekable for nbdkit's
    xz filter); the sha512 and size of what was written. Holes are read as zeros."""
    digest = hashlib.sha512()
    try:
        proc = subprocess.Popen(
            [*XZ, "--", str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise errors.LocalToolMissing(tool="xz", purpose="importing images") from None
    written = 0
    with _running(proc), open(dest, "wb") as out:
        assert proc.stdout is not None and proc.stderr is not None
        err = _drain(proc.stderr)
        where = _Position(raw, proc)
        # What xz has written so far, not 1 MiB: a mostly empty disk compresses to little.
        while chunk := os.read(proc.stdout.fileno(), CHUNK):
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
            progress("compressing", min(where.get(), size), size)
        proc.wait()
        out.flush()
        os.fsync(out.fileno())
    if proc.returncode != 0:
        raise errors.LocalCommandFailed(command="xz", exit_status=proc.returncode, stderr=err())
    progress("compressing", size, size)
    return digest.hexdigest(), written


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _section(
    request: Request,
    *,
    revision: int,
    file_name: str,
    sha512: str,
    size: int,
    compressed: int,
    what: str,
    cloud_init: tuple[str, ...] = (),
    expand: str | None = None,
) -> str:
    """The new revision's index section (virt-builder's format, as repo_index reads it);
    `expand`: the partition a larger disk grows (virt-builder's `expand=`, mclu's too).

    That the image carries cloud-init goes in its notes, not in a key of its own: mclu reads
    `personalise` from its template files, and virt-builder 1.48 ignores an unknown key only
    when its name has no '-'."""
    notes = f"Imported by mclu from {request.source} ({what})"
    if cloud_init:
        notes += f"; carries cloud-init ({', '.join(cloud_init)})"
    fields_ = [
        ("name", _one_line(request.description) or request.name),
        ("arch", request.arch),
        ("file", file_name),
        ("revision", str(revision)),
        ("checksum[sha512]", sha512),
        ("format", "raw"),
        ("size", str(size)),
        ("compressed_size", str(compressed)),
        *([("expand", expand)] if expand else []),
        ("notes", _one_line(notes)),
    ]
    return f"[{request.name}]\n" + "".join(f"{k}={v}\n" for k, v in fields_) + "\n"


def expand_partition(root: str | None) -> str | None:
    """The partition a build grows when asked for a larger disk: the OS root's, when it is a
    plain partition of the disk (`/dev/sda2`, as libguestfs and virt-builder name it); None
    for a root on LVM, RAID or the whole disk, which mclu does not grow. Pure."""
    if root and re.fullmatch(r"/dev/sda[0-9]+", root):
        return root
    return None


def _add_to_index(repository: Path, name: str, section: str, sign_key: str | None) -> list[str]:
    """Put `section` in the index in place of `name`'s (virt-builder wants one section per
    template and arch), written aside and renamed, and signed with `sign_key` (index.asc,
    key.asc) when there is one; the `file=` values it replaced."""
    index = repository / INDEX
    try:
        text = index.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    kept: list[str] = []
    replaced: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        if m := _SECTION.match(line.rstrip("\n")):
            dropping = m[1] == name
        if dropping:
            if line.startswith("file="):
                replaced.append(line.removeprefix("file=").strip())
        else:
            kept.append(line)
    body = "".join(kept).rstrip("\n")
    new = (body + "\n\n" if body else "") + section
    repo_index.parse_index(new, index.as_uri())  # what mclu will read must parse
    if sign_key is not None:
        signed, public = _sign(new, sign_key)  # before anything is written: it may fail
        _replace_text(repository / PUBLIC_KEY, public)
        _replace_text(repository / SIGNED_INDEX, signed)
        _replace_text(repository / SIGNING_KEY, sign_key + "\n")
    _replace_text(index, new)
    return replaced


def _recorded_key(repository: Path) -> str | None:
    """The key a signed repository's imports sign with (given once with --sign)."""
    try:
        return (repository / SIGNING_KEY).read_text().strip() or None
    except FileNotFoundError:
        return None


def _sign(text: str, key: str) -> tuple[str, str]:
    """`text` clear-signed with the user's gpg key `key`, and that key's public half."""
    gpg = ["gpg", "--batch", "--yes", "--no-tty", "--armor"]
    try:
        signed = subprocess.run(
            [*gpg, "--local-user", key, "--clearsign"], input=text, capture_output=True, text=True
        )
        public = subprocess.run([*gpg, "--export", "--", key], capture_output=True, text=True)
    except FileNotFoundError:
        raise errors.LocalToolMissing(tool="gpg", purpose="signing the index") from None
    if signed.returncode != 0:
        raise errors.LocalCommandFailed(
            command=f"gpg --local-user {key} --clearsign",
            exit_status=signed.returncode,
            stderr=signed.stderr,
        )
    if public.returncode != 0 or "BEGIN PGP PUBLIC KEY" not in public.stdout:
        raise errors.LocalCommandFailed(
            command=f"gpg --export {key}", exit_status=public.returncode, stderr=public.stderr
        )
    return signed.stdout, public.stdout


def _replace_text(path: Path, text: str) -> None:
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One import at a time per repository: the revision is read and written under it."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
