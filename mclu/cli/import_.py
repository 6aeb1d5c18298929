"""`mclu templates import SOURCE NAME`: a disk image (path or URL) made a template of the
user's own repository (mclu.images.importing does the work; docs/images.md tells the rest)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from mclu import errors, runtmp
from mclu.cli import commands, parsing
from mclu.config import catalogue, repo_index, sources
from mclu.images import importing

_HEX = {"sha256": re.compile(r"^[0-9a-fA-F]{64}$"), "sha512": re.compile(r"^[0-9a-fA-F]{128}$")}


def register(templates_sub: parsing.Subparsers) -> None:
    parser = parsing.add_command(
        templates_sub,
        "import",
        run,
        "make a disk image (path or http(s) URL) a template of your own repository",
    )
    parser.add_argument("source", metavar="SOURCE", help="a disk image: a path or a URL")
    parser.add_argument("name", metavar="NAME", help="the template it becomes (a new revision)")
    parser.add_argument("--description", default="", help="the template's one-line description")
    digest = parser.add_mutually_exclusive_group()
    for algorithm in _HEX:
        digest.add_argument(
            f"--{algorithm}",
            metavar="HEX",
            type=_hex(algorithm),
            help=f"refuse the image unless its {algorithm} (of SOURCE as given) is HEX",
        )
    parser.add_argument(
        "--sign",
        metavar="KEY",
        help="sign the repository's index with this key of your gpg keyring (and every later "
        "import with it); else it stays as it is (unsigned until signed once)",
    )
    parsing.add_templates_dir(parser, default=argparse.SUPPRESS)


def _hex(algorithm: str) -> Any:
    def parse(text: str) -> str:
        if not _HEX[algorithm].fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a {algorithm} hex digest: {text[:20]!r}")
        return text.lower()

    return parse


async def run(args: argparse.Namespace, env: commands.Env) -> int:
    name: str = args.name
    if not repo_index.NAME.fullmatch(name):
        raise errors.UsageError(
            f"invalid template name {name!r}: use letters, digits, '.', '_', '+', '-', "
            "starting with a letter or digit"
        )
    args.templates = getattr(args, "templates", None)
    mine, found = await commands.read_templates(args, env)
    own = mine.get(name)
    if own is not None and own.base != name:
        raise errors.UsageError(
            f"{name} is an mclu template ({own.path}, on {own.base}): an import named so "
            "would be hidden by it; choose another name"
        )
    repository = importing.repository_dir(env.environ)
    conf, listed = _repos_d(args, env)
    above = max((t.entry.revision for t in found.templates if t.entry.name == name), default=0)
    checksum = next(((a, getattr(args, a)) for a in _HEX if getattr(args, a)), None)
    request = importing.Request(
        source=args.source,
        name=name,
        description=args.description,
        checksum=checksum,
        revision_above=above,
        sign_key=args.sign,
    )
    meter = Meter(env.printer.err, env.printer.out, args.json, env.printer.err.isatty())
    with runtmp.tempdir("import-") as work, meter:
        working = asyncio.ensure_future(
            asyncio.to_thread(
                importing.import_image,
                request,
                repository,
                Path(work),
                meter.update,
                meter.stopping,
            )
        )
        try:
            done = await asyncio.shield(working)
        except asyncio.CancelledError:
            # Ctrl-C, SIGTERM: a thread cannot be cancelled, so it is asked to stop (at its next
            # progress report), and waited for: it undoes its work before the run dir goes.
            meter.stopping.set()
            with contextlib.suppress(BaseException):
                await working
            raise
    conf_path = importing.write_conf(conf, repository, signed=done.signed_by is not None)
    meter.finish(done.virtual_size)
    if args.json:
        env.printer.json_line(
            {"event": "imported", **done.__dict__, "conf": str(conf_path), "listed": listed}
        )
    else:
        what = done.format if done.compression is None else f"{done.format} in {done.compression}"
        env.printer.text(
            f"imported {done.name} revision {done.revision} from {what}: "
            f"{_size(done.virtual_size)} disk, {_size(done.allocated_size)} allocated, "
            f"{_size(done.required_size)} on a host, "
            f"{_size(done.compressed_size)} compressed, into {done.index} "
            + (f"(signed by {done.signed_by})" if done.signed_by else "(unsigned)")
        )
        env.printer.text(
            f"its system: {done.os_name or 'unnamed'} on {done.root}"
            + (", with cloud-init" if done.cloud_init else ", no cloud-init")
        )
    if done.cloud_init:
        templates = catalogue.locate(args.templates, env.environ) / f"{name}.toml"
        env.printer.note(cloud_init_proposal(name, done.cloud_init, templates))
    if not listed:
        env.printer.note(
            f"your inventory's template_repos does not list {conf}: add it to see {name}"
        )
    return errors.EXIT_OK


def cloud_init_proposal(name: str, found: tuple[str, ...], template: Path) -> str:
    """What import says of an image that carries cloud-init: how to build from it with it."""
    return (
        f"{name} carries cloud-init ({', '.join(found)}): cloud-init can personalise it "
        f"without the libguestfs appliance; to build so, write {template} with "
        f'base = "{name}" and personalise = "cloud-init"'
    )


def _repos_d(args: argparse.Namespace, env: commands.Env) -> tuple[Path, bool]:
    """Where the repository's .conf goes, and whether mclu reads it there: the first
    directory of the inventory's template_repos, else virt-builder's own repos.d in the
    user's config home (which virt-builder reads too)."""
    places = commands.template_repos(args, env)
    default = sources.default_repo_dirs(env.environ)
    if places == default:
        return default[0], True
    directory = next((p for p in places if p.is_dir()), None)
    return (directory, True) if directory is not None else (default[0], False)


def _size(n: float) -> str:
    """ovirt-img's way: two decimals in binary units ("6.00 GiB", "364.64 MiB")."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.2f} {unit}"


class Meter:
    """Progress in ovirt-img's style, `[ 45%] 2.70 GiB, 7.40 s, 364.64 MiB/s | compressing`,
    redrawn in place on a terminal (nothing off one); JSON lines with --json (at most four a
    second). Called from the worker thread."""

    def __init__(self, err: TextIO, out: TextIO, as_json: bool, terminal: bool) -> None:
        self.err, self.out = err, out
        self.as_json, self.terminal = as_json, terminal
        self.started = time.monotonic()
        self.phase_started = self.started
        self.phase = ""
        self.last = 0.0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def update(self, phase: str, done: int, total: int) -> None:
        if self.stopping.is_set():
            raise importing.Stopped
        with self.lock:
            now = time.monotonic()
            if phase != self.phase:
                self.phase, self.phase_started, self.last = phase, now, 0.0
            elif now - self.last < 0.25 and done < total:
                return
            self.last = now
            if self.as_json:
                event = {"event": "progress", "phase": phase, "done": done, "total": total}
                print(json.dumps(event), file=self.out, flush=True)
            elif self.terminal:
                line = self._line(done, total, now - self.phase_started, phase)
                print(f"\r{line}\033[K", end="", file=self.err, flush=True)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        """A refusal's line starts on a line of its own, not after the progress line."""
        if exc[0] is not None and self.phase and self.terminal and not self.as_json:
            print(file=self.err, flush=True)

    def finish(self, size: int) -> None:
        if self.terminal and not self.as_json:
            line = self._line(size, size, time.monotonic() - self.started, "import completed")
            print(f"\r{line}\033[K", file=self.err, flush=True)

    @staticmethod
    def _line(done: int, total: int, seconds: float, what: str) -> str:
        if what == "inspecting":  # the libguestfs appliance: no bytes to count, only time
            return f"[ ...] {seconds:.2f} s | inspecting (libguestfs appliance)"
        percent = f"{100 * done // total:3d}%" if total else " ..."
        rate = _size(done / seconds) + "/s" if seconds > 0 else "-"
        return f"[{percent}] {_size(done)}, {seconds:.2f} s, {rate} | {what}"
