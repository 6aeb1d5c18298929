"""A fake host's files, and the command lines of `mclu.hosts.commands` that act on them.

`Files` is a small in-memory file table: regular files (bytes, or an `Image` whose size and
backing file are kept but not its data, under one name or several: hard links), directories,
and the sockets of the NBD servers running (`serve`). `answer` runs a command line on it
when it is one `mclu.hosts.commands` makes: each case takes the values out of argv and checks
that the same function of `mclu.hosts.commands` makes exactly that argv of them, so the fake
understands what mclu sends and nothing else (no copied script text). Exit statuses and the
files left are what a real host gives (tests/contract/test_commands_contract.py runs the same
cases on both); error messages are shortened.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mclu.hosts import commands
from mclu.hosts.session import CommandResult


@dataclass(frozen=True)
class Image:
    """A file whose data the fake does not keep: a disk image of `size` bytes (its virtual
    size: a raw file's length, a qcow2 image's disk size) on `backing`, if any."""

    format: str = "raw"
    size: int = 0
    backing: str | None = None
    backing_format: str | None = None
    data: int = 0  # bytes it takes on the host's disk (qemu-img's actual-size)


Content = bytes | Image


@dataclass
class Files:
    """The files and directories of a fake host. Directories holding a file, and their
    parents, exist; so do those made (`mkdir`) and "/". Names of one file (hard links) share
    an inode number; a file changed under one name changes under all."""

    files: dict[str, Content] = field(default_factory=dict)
    directories: set[str] = field(default_factory=set)
    inodes: dict[str, int] = field(default_factory=dict)  # path → its file's number
    sockets: set[str] = field(default_factory=set)  # where a server listens
    _numbers: Iterator[int] = field(
        default_factory=itertools.count, init=False, repr=False, compare=False
    )

    def write(self, path: str, content: Content) -> None:
        """Put a file on the host (for tests), its parent directories with it; a file there
        already (and its other names) gets the new content."""
        path = _normal(path)
        if path in self.files and path in self.inodes:
            number = self.inodes[path]
            for name in [p for p, n in self.inodes.items() if n == number]:
                self.files[name] = content
        else:
            self.files[path] = content
            self.inodes[path] = next(self._numbers)

    def same_file(self, path: str, other: str) -> bool:
        path, other = _normal(path), _normal(other)
        if path not in self.files or other not in self.files:
            return False
        return path == other or self.inodes.get(path, -1) == self.inodes.get(other, -2)

    def unlink(self, path: str) -> None:
        self.files.pop(_normal(path), None)
        self.inodes.pop(_normal(path), None)

    def rename(self, path: str, dest: str) -> None:
        """The file `path` under the name `dest` (replacing what dest named), and not `path`."""
        path, dest = _normal(path), _normal(dest)
        content, number = self.files[path], self.inodes.get(path)
        self.unlink(path)
        self.unlink(dest)
        self.files[dest] = content
        self.inodes[dest] = next(self._numbers) if number is None else number

    def link(self, path: str, new: str) -> None:
        path, new = _normal(path), _normal(new)
        if path not in self.inodes:
            self.inodes[path] = next(self._numbers)
        self.files[new] = self.files[path]
        self.inodes[new] = self.inodes[path]

    def is_dir(self, path: str) -> bool:
        path = _normal(path)
        if path == "/" or path in self.directories:
            return True
        inside = path + "/"
        return any(p.startswith(inside) for p in (*self.files, *self.directories))

    def exists(self, path: str) -> bool:
        path = _normal(path)
        return path in self.files or path in self.sockets or self.is_dir(path)

    def serve(self, argv: Sequence[str]) -> Callable[[], None] | None:
        """Start the background command argv when it is an NBD server of
        `commands.nbd_server`: its directory made and its socket listening; returns how it
        stops (the directory removed). None for any other command line."""
        argv = list(argv)
        server = argv[5:]
        if len(server) < 4 or argv != commands.nbd_server(argv[4], server):
            return None
        socket = server[2]
        if server != commands.qemu_nbd(socket, server[-1], server[3:-1], server[0]):
            return None
        directory = _normal(argv[4])
        self.directories.add(directory)
        self.sockets.add(_normal(socket))

        def stop() -> None:
            _remove_tree(self, commands.remove_tree(directory))

        return stop

    def answer(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult | None:
        """What the command line argv does on these files (given `stdin`); None when it is not
        one this table understands (a command of `mclu.hosts.commands` or not)."""
        argv = list(argv)
        if len(argv) == 5 and argv == commands.write_new_file(argv[4]):
            done = _write_new(self, argv[4], stdin or b"")
            return CommandResult(tuple(argv), done.exit_status, done.stdout, done.stderr)
        for case in _CASES:
            result = case(self, argv)
            if result is not None:
                return CommandResult(tuple(argv), result.exit_status, result.stdout, result.stderr)
        return None


def _normal(path: str) -> str:
    return posixpath.normpath(path) if path else path


@dataclass(frozen=True)
class _Done:
    exit_status: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


def _ok(stdout: bytes = b"") -> _Done:
    return _Done(0, stdout)


def _failed(message: str, exit_status: int = 1) -> _Done:
    return _Done(exit_status, b"", f"{message}\n".encode())


Case = Callable[[Files, list[str]], _Done | None]
_CASES: list[Case] = []


def _case(function: Case) -> Case:
    _CASES.append(function)
    return function


# --- each case: the values out of argv, the argv remade of them by hosts.commands, the effect --


@_case
def _remove(files: Files, argv: list[str]) -> _Done | None:
    paths = argv[3:]
    if argv != commands.remove(*paths):
        return None
    failed = None
    for path in paths:
        if files.is_dir(path):
            failed = _failed(f"rm: cannot remove '{path}': Is a directory")
        else:
            files.unlink(path)
    return failed or _ok()


@_case
def _remove_tree(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 4 or argv != commands.remove_tree(argv[3]):
        return None
    path = _normal(argv[3])
    inside = path + "/"
    for name in [p for p in files.files if p == path or p.startswith(inside)]:
        files.unlink(name)
    files.sockets = {p for p in files.sockets if p != path and not p.startswith(inside)}
    files.directories = {d for d in files.directories if d != path and not d.startswith(inside)}
    return _ok()


@_case
def _make_directory(files: Files, argv: list[str]) -> _Done | None:
    path = argv[-1]
    mode = argv[3] if len(argv) == 6 else None
    if argv != commands.make_directory(path, mode):
        return None
    for parent in _ancestors(_normal(path)):
        if parent in files.files:
            return _failed(f"mkdir: cannot create directory '{path}': Not a directory")
    if _normal(path) in files.files:
        return _failed(f"mkdir: cannot create directory '{path}': File exists")
    files.directories.add(_normal(path))
    return _ok()


@_case
def _test(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 3:
        return None
    path = argv[2]
    for make, holds in (
        (commands.exists, files.exists),
        (commands.is_file, lambda p: _normal(p) in files.files),
        (commands.is_socket, lambda p: _normal(p) in files.sockets),
    ):
        if argv == make(path):
            return _Done(0 if holds(path) else 1)
    return None


@_case
def _read_file(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 3 or argv != commands.read_file(argv[2]):
        return None
    content = _readable(files, argv[2], "cat: {path}: {why}")
    return content if not isinstance(content, bytes) else _ok(content)


@_case
def _tail(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 5 or not argv[2].isdigit():
        return None
    path, size = argv[4], int(argv[2])
    if argv != commands.tail(path, size):
        return None
    content = _readable(files, path, "tail: cannot open '{path}' for reading: {why}")
    return content if not isinstance(content, bytes) else _ok(content[-size:] if size else b"")


@_case
def _file_size(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 5 or argv != commands.file_size(argv[4]):
        return None
    content = files.files.get(_normal(argv[4]))
    if content is None:
        return _failed(f"stat: cannot statx '{argv[4]}': No such file or directory")
    size = content.size if isinstance(content, Image) else len(content)
    return _ok(f"{size}\n".encode())


def _write_new(files: Files, path: str, data: bytes) -> _Done:
    refused = _can_create(files, path, f"sh: 1: cannot create {path}")
    if refused is not None:
        return refused
    files.write(path, data)
    return _ok()


@_case
def _make_private(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 4 or argv != commands.make_private(argv[3]):
        return None
    if not files.exists(argv[3]):
        return _failed(f"chmod: cannot access '{argv[3]}': No such file or directory")
    return _ok()  # the fake keeps no modes


@_case
def _link(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 4 or argv != commands.link(argv[2], argv[3]):
        return None
    path, new = _normal(argv[2]), argv[3]
    content = files.files.get(path)
    if content is None:
        return _failed(f"ln: failed to access '{argv[2]}': No such file or directory")
    refused = _can_create(files, new, "ln: failed to create hard link")
    if refused is not None:
        return refused
    files.link(path, new)
    return _ok()


@_case
def _move_over(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 6 or argv != commands.move_over(argv[4], argv[5]):
        return None
    return _rename(files, argv[4], argv[5])


@_case
def _commit(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 7 or argv != commands.commit(argv[4], argv[5]):
        return None
    if _normal(argv[4]) not in files.files:
        return _failed(f"sync: error opening '{argv[4]}': No such file or directory")
    return _rename(files, argv[4], argv[5])


@_case
def _empty_file(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 6 or not argv[5].isdigit():
        return None
    path, size = argv[4], int(argv[5])
    if argv != commands.empty_file(path, size):
        return None
    if not files.is_dir(posixpath.dirname(_normal(path))):
        return _failed(f"sh: 1: cannot create {path}: Directory nonexistent", 2)
    if files.is_dir(path):
        return _failed(f"sh: 1: cannot create {path}: Is a directory", 2)
    files.write(path, Image("raw", size))
    return _ok()


@_case
def _set_size(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 5 or not argv[2].isdigit():
        return None
    path, size = argv[4], int(argv[2])
    if argv != commands.set_size(path, size):
        return None
    refused = _can_write(files, path, "truncate: cannot open")
    if refused is not None:
        return refused
    files.write(path, _resized(files.files.get(_normal(path), b""), size))
    return _ok()


@_case
def _image_create(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) not in (7, 11) or not argv[-1].isdigit():
        return None
    path, image_format, size = argv[-2], argv[4], int(argv[-1])
    backing, backing_format = (argv[6], argv[8]) if len(argv) == 11 else (None, None)
    if argv != commands.image_create(path, image_format, size, backing, backing_format):
        return None
    if backing is not None and _normal(backing) not in files.files:
        return _failed(f"qemu-img: {path}: Could not open '{backing}': No such file or directory")
    refused = _can_write(files, path, f"qemu-img: {path}: Could not create '{path}'")
    if refused is not None:
        return refused
    files.write(path, Image(image_format, size, backing, backing_format))
    return _ok()


@_case
def _sparse_copy(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 7 or not argv[6].isdigit():
        return None
    source, dest, size = argv[4], argv[5], int(argv[6])
    if argv != commands.sparse_copy(source, dest, size):
        return None
    content = files.files.get(_normal(source))
    if content is None:
        return _failed(f"cp: cannot stat '{source}': No such file or directory")
    refused = _can_write(files, dest, f"cp: cannot create regular file '{dest}'")
    if refused is not None:
        return refused
    files.write(dest, _resized(content, size))
    return _ok()


@_case
def _qcow2_files(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 8 or argv != commands.qcow2_files(argv[1]):
        return None
    directory = _normal(argv[1])
    if not files.is_dir(directory):
        return _failed(f"find: '{argv[1]}': No such file or directory")
    found = [
        f"{argv[1].rstrip('/')}/{posixpath.basename(path)}\n"
        for path in files.files
        if posixpath.dirname(path) == directory and path.endswith(".qcow2")
    ]
    return _ok("".join(found).encode())


@_case
def _backing_info(files: Files, argv: list[str]) -> _Done | None:
    disks = argv[4:]
    if argv != commands.backing_info(disks):
        return None
    out, err = [], []
    for disk in disks:
        content = files.files.get(_normal(disk))
        if content is None:
            err.append(f"qemu-img: Could not open '{disk}': No such file or directory\n")
            continue
        out.append(json.dumps(image_info(disk, _image(content)), indent=4) + "\n")
    return _Done(0, "".join(out).encode(), "".join(err).encode())


@_case
def _existing(files: Files, argv: list[str]) -> _Done | None:
    paths = argv[4:]
    if argv != commands.existing(paths):
        return None
    return _ok("".join(f"{p}\n" for p in paths if files.exists(p)).encode())


@_case
def _same_file(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 4 or argv != commands.same_file(argv[1], argv[3]):
        return None
    return _Done(0 if files.same_file(argv[1], argv[3]) else 1)


@_case
def _restore_disk(files: Files, argv: list[str]) -> _Done | None:
    if len(argv) != 6 or argv != commands.restore_disk(argv[4], argv[5]):
        return None
    old, disk = argv[4], argv[5]
    if not files.exists(old):
        return _ok()
    if files.same_file(old, disk):
        files.unlink(old)
        return _ok()
    return _rename(files, old, disk)


@_case
def _disk_info(files: Files, argv: list[str]) -> _Done | None:
    disks = argv[4:]
    if argv != commands.disk_info(disks):
        return None
    out: list[str] = []
    for disk in disks:
        chain: list[dict[str, object]] = []
        path: str | None = disk
        while path is not None:
            content = files.files.get(_normal(path))
            if content is None:
                return _Done(
                    1,
                    "".join(out).encode(),
                    f"qemu-img: Could not open '{path}': No such file or directory\n".encode(),
                )
            image = _image(content)
            chain.append(image_info(path, image))
            path = image.backing
        out.append(json.dumps(chain, indent=4) + "\n")
    return _ok("".join(out).encode())


# --- the parts the cases share -----------------------------------------------------------------


def _ancestors(path: str) -> Iterable[str]:
    """path's parent directories, "/" excluded, nearest last."""
    parts = path.strip("/").split("/")[:-1]
    return ("/" + "/".join(parts[: i + 1]) for i in range(len(parts)))


def _readable(files: Files, path: str, message: str) -> bytes | _Done | None:
    """The bytes of the file `path`, or the failure of reading it (`message`, formatted with
    path and why); None for an image, whose data the fake does not keep."""
    content = files.files.get(_normal(path))
    if content is None:
        why = "Is a directory" if files.is_dir(path) else "No such file or directory"
        return _failed(message.format(path=path, why=why))
    return None if isinstance(content, Image) else content


def _can_write(files: Files, path: str, message: str) -> _Done | None:
    """None if a file may be written at `path` (its directory exists, it is no directory)."""
    if not files.is_dir(posixpath.dirname(_normal(path))):
        return _failed(f"{message}: No such file or directory")
    if files.is_dir(path):
        return _failed(f"{message}: Is a directory")
    return None


def _can_create(files: Files, path: str, message: str) -> _Done | None:
    """`_can_write`, and no file may be there yet."""
    if files.exists(path):
        return _failed(f"{message} '{path}': File exists")
    return _can_write(files, path, f"{message} '{path}'")


def _rename(files: Files, path: str, dest: str) -> _Done | None:
    content = files.files.get(_normal(path))
    if content is None:
        return _failed(f"mv: cannot stat '{path}': No such file or directory")
    refused = _can_write(files, dest, f"mv: cannot move '{path}' to '{dest}'")
    if refused is not None:
        return refused
    files.rename(path, dest)
    return _ok()


def _resized(content: Content, size: int) -> Content:
    if isinstance(content, Image):
        return dataclasses.replace(content, size=size)
    return content[:size].ljust(size, b"\0")


def _image(content: Content) -> Image:
    """A file as qemu-img sees it: an image, or any other file as a raw one."""
    return content if isinstance(content, Image) else Image("raw", len(content), data=len(content))


def image_info(path: str, image: Image) -> dict[str, object]:
    """What `qemu-img info --output=json` says of an image (the fields mclu reads)."""
    info: dict[str, object] = {
        "filename": path,
        "format": image.format,
        "virtual-size": image.size,
        "actual-size": image.data,
    }
    if image.backing is not None:
        info["backing-filename"] = image.backing
        info["full-backing-filename"] = image.backing
        info["backing-filename-format"] = image.backing_format or "raw"
    return info
