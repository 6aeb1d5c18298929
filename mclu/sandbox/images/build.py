"""Build one template: root tree → bootable raw disk → xz file, with its checksum.

The root trees are made by the packaged shell scripts (`scripts/`); this module runs them,
logs each step with its time, and turns failures into `TemplateBuildError`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mclu.errors import MCLUError
from mclu.sandbox.images import recipes

log = logging.getLogger(__name__)

# Generous bounds: debootstrap downloads about 100 MB; xz of 1 GiB takes a minute or two.
STEP_TIMEOUT = 1800.0


class TemplateBuildError(MCLUError):
    """A step of a template build failed; the tail of its log is in `detail`."""

    msg = "template {self.name}: {self.step} failed: {self.detail} (log: {self.log_path})"

    def __init__(self, name: str, step: str, detail: str, log_path: Path) -> None:
        super().__init__(detail)
        self.name = name
        self.step = step
        self.log_path = log_path


@dataclass(frozen=True)
class BuiltImage:
    """A finished template file. Sizes in bytes: virtual, allocated before xz, and xz."""

    file: str
    size: int
    allocated: int
    compressed_size: int
    checksum: str
    seconds: float


def build_template(
    recipe: recipes.Recipe,
    inputs: dict[str, str],
    out_dir: Path,
    work_dir: Path,
    log_path: Path,
    keep_fds: tuple[int, ...] = (),
) -> BuiltImage:
    """Build `recipe` into `out_dir/NAME.xz`, using `work_dir` for the root tree and disk.

    `keep_fds` are passed on to every step (the repository lock).
    """
    started = time.monotonic()
    runner = _Runner(recipe.name, log_path, keep_fds)
    fs_uuid = str(uuid.uuid4())
    root = work_dir / f"{recipe.name}.root"
    disk = work_dir / f"{recipe.name}.img"
    root.mkdir(mode=0o755)
    runner.run("root tree", _root_argv(recipe, inputs, root, fs_uuid))
    runner.run(
        "disk",
        [
            "sh",
            str(recipes.script_path("disk.sh")),
            str(root),
            str(disk),
            str(recipe.size_mib),
            fs_uuid,
        ],
    )
    remove_tree(root)
    allocated = disk.stat().st_blocks * 512
    xz_path = out_dir / f"{recipe.name}.xz"
    with xz_path.open("wb") as out:
        runner.run("xz", ["xz", *recipes.XZ_OPTIONS, "--stdout", str(disk)], stdout=out)
    size = disk.stat().st_size
    disk.unlink()
    return BuiltImage(
        file=xz_path.name,
        size=size,
        allocated=allocated,
        compressed_size=xz_path.stat().st_size,
        checksum=sha512_file(xz_path),
        seconds=time.monotonic() - started,
    )


def _root_argv(
    recipe: recipes.Recipe, inputs: dict[str, str], root: Path, fs_uuid: str
) -> list[str]:
    if recipe.name == recipes.TINY.name:
        return [
            "sh",
            str(recipes.script_path("tiny-root.sh")),
            str(root),
            inputs["kernel"],
            fs_uuid,
        ]
    if recipe.debootstrapped:
        # Private namespaces: debootstrap's /proc and /sys mounts in the target, the hostname
        # and any daemon a package script starts all stay inside, and die with it.
        return [
            "unshare",
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "sh",
            str(recipes.script_path("debian-root.sh")),
            str(root),
            recipe.params["suite"],
            inputs["mirror"],
            inputs["security_mirror"],
            recipe.params["include"],
            fs_uuid,
            recipe.params["packages"],
        ]
    raise ValueError(f"no build steps for template {recipe.name!r}")


class _Runner:
    """Runs the steps of one build, appending their output to its log file."""

    def __init__(self, name: str, log_path: Path, keep_fds: tuple[int, ...]) -> None:
        self.name = name
        self.log_path = log_path
        self.keep_fds = keep_fds

    def run(self, step: str, argv: list[str], stdout: IO[bytes] | None = None) -> None:
        started = time.monotonic()
        log.info("%s: %s ...", self.name, step)
        with self.log_path.open("a") as log_file:
            log_file.write(f"\n=== {step}: {' '.join(argv)}\n")
            log_file.flush()
            try:
                result = subprocess.run(
                    argv,
                    stdout=stdout or log_file,
                    stderr=log_file,
                    stdin=subprocess.DEVNULL,
                    timeout=STEP_TIMEOUT,
                    pass_fds=self.keep_fds,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise TemplateBuildError(
                    self.name, step, f"timed out after {STEP_TIMEOUT:.0f} s", self.log_path
                ) from None
        if result.returncode != 0:
            raise TemplateBuildError(
                self.name,
                step,
                f"exit status {result.returncode}: {_tail(self.log_path)}",
                self.log_path,
            )
        log.info("%s: %s done in %.1f s", self.name, step, time.monotonic() - started)


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])


def sha512_file(path: Path) -> str:
    """The hex SHA-512 of a file's content."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def mount_points_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # octal escapes: \040
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf `path`, but never through a mount point (e.g. a chroot's /proc)."""
    if not path.exists():
        return
    mounted = mount_points_under(path)
    if mounted:
        raise RuntimeError(f"refusing to remove {path}: mounted below it: {mounted}")
    shutil.rmtree(path)
