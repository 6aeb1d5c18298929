"""The one harness of the CLI tests: mclu command lines run in-process against fake hosts.

`Cli(tmp_path)` is a controller of its own: a FakeCluster (hosts a, b and c unless told), an
inventory, a local template repository, a private HOME (its ~/.ssh empty until `give_key()`)
and controller cache. `cli(*argv)` runs `mclu.cli.main.run` and returns the exit code; what
mclu printed (its printer's and argparse's, in order) is in `cli.stdout` and `cli.stderr`.
A test varies it by keyword (hosts, inventory text, index, a template directory of its own)
or by what it sets on the cluster's hosts; `cli.opener` may be replaced to stand in for
hosts that behave otherwise (tests/cli/test_power.py does).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argcomplete
import pytest
from argcomplete.finders import CompletionFinder

from mclu import model
from mclu.act import rebuild
from mclu.act.build import Inputs
from mclu.cli import commands, completion, main, output
from mclu.decide.build import GuestPlan
from mclu.hosts import commands as host_commands
from mclu.hosts import fake
from mclu.hosts.session import CommandResult, Session
from mclu.read import snapshot
from tests.builders import IMAGES

# Three hosts in two racks, a template repository, 1 GiB kept for each host.
INVENTORY = """
template_repos = ["{repos}"]
[defaults]
reserve_memory = "1 GiB"
[hosts.a]
tags = ["rack1"]
[hosts.b]
tags = ["rack1"]
[hosts.c]
tags = ["rack2"]
"""

# Hosts a, b, c that share their storage: a migration moves no disk (the fake hosts have no
# shell for the disk work; tests/integration/test_migrate.py has).
SHARED_STORAGE = """
[defaults]
reserve_memory = "1 GiB"
shared_storage = true
[hosts.a]
[hosts.b]
[hosts.c]
"""

SHA = "0" * 128
INDEX = f"""[tiny]
name=Tiny busybox
file=tiny.xz
revision=3
checksum[sha512]={SHA}
size=134217728
compressed_size=11000000

[debian-12]
name=Debian 12 minbase
file=debian-12.xz
revision=2
checksum[sha512]={SHA}
size=1073741824

[debian-12]
name=Debian 12 minbase
file=debian-12-r1.xz
revision=1
checksum[sha512]={SHA}
size=1073741824

[secret]
file=s.xz
checksum[sha512]={SHA}
size=1
hidden=true
"""

IFS = "\013"  # argcomplete's separator of the words it offers


@dataclass
class Result:
    """One command line's outcome, for tests that look at it as a whole."""

    code: int
    stdout: str
    stderr: str

    def one_error_line(self) -> str:
        """The single line on stderr, after checking that it is the only one."""
        assert "Traceback" not in self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert self.stderr.endswith("\n")
        return lines[0]


class Cli:
    """Runs mclu command lines against a FakeCluster and keeps what they printed."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        hosts: Sequence[str] = ("a", "b", "c"),
        inventory: str = INVENTORY,
        index: str = INDEX,
        own_templates: bool = False,
    ) -> None:
        self.tmp = tmp_path
        self.cluster = fake.FakeCluster.of(*hosts)
        self.repo = make_repository(tmp_path, index)
        self.repos_d = self.repo / "repos.d"
        self.home = tmp_path / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.templates = tmp_path / "templates"  # with own_templates: $MCLU_TEMPLATES
        self.templates.mkdir()
        self.key = tmp_path / "id.pub"  # for --ssh-key
        self.key.write_text("ssh-ed25519 AAAA test\n")
        self.inventory = self.write_inventory(inventory)
        self.environ = {
            "MCLU_CONFIG": str(self.inventory),
            "HOME": str(self.home),
            "MCLU_CACHE": str(tmp_path / "cache"),
        }
        if own_templates:  # else the project's templates/ (tiny, debian-12), as a user's
            self.environ["MCLU_TEMPLATES"] = str(self.templates)
        self.opened: list[str] = []  # the hosts sessions were opened to, in order
        self.opener: snapshot.Opener = self._open
        self.personalise: rebuild.Personaliser = rebuild.personalise
        self.out = io.StringIO()
        self.err = io.StringIO()

    def write_inventory(self, text: str, name: str = "hosts.toml") -> Path:
        """An inventory file; `{repos}` in `text` is the repository's repos.d."""
        path = self.tmp / name
        path.write_text(text.replace("{repos}", str(self.repos_d)))
        return path

    def use_inventory(self, path: Path) -> None:
        """Run the next commands with the inventory at `path`."""
        self.inventory = path
        self.environ["MCLU_CONFIG"] = str(path)

    def personalise_with(self, personalise: Personalise) -> None:
        """A rebuild's personalisation (libguestfs, which the fake hosts' disks are not for)
        replaced by `personalise`, given the guest's name, through mclu's own seam
        (`commands.Env.personalise`)."""

        async def step(
            session: Session,
            work: GuestPlan,
            template: model.ResolvedTemplate,
            inputs: Inputs,
            say: Callable[[str], None],
        ) -> model.GuestTraits:
            return await personalise(work.name)

        self.personalise = step

    def give_key(self) -> None:
        """The user's own ssh key: ~/.ssh/id_ed25519.pub, the default a build gives guests."""
        (self.home / ".ssh" / "id_ed25519.pub").write_text("ssh-ed25519 AAAA user@ctl\n")

    @asynccontextmanager
    async def _open(self, spec: model.HostSpec) -> AsyncIterator[fake.FakeSession]:
        self.opened.append(spec.name)
        async with self.cluster.open(spec) as session:
            yield session

    def env(self) -> commands.Env:
        return commands.Env(
            environ=self.environ,
            printer=output.Printer(out=self.out, err=self.err),
            open_session=self.opener,
            personalise=self.personalise,
        )

    def __call__(self, *argv: str) -> int:
        self.out, self.err = io.StringIO(), io.StringIO()
        # argparse writes its usage errors and --help to sys.stderr and sys.stdout itself.
        with contextlib.redirect_stdout(self.out), contextlib.redirect_stderr(self.err):
            code = main.run(list(argv), self.env())
        assert self.cluster.open_sessions == 0  # every session closed, whatever happened
        return code

    def result(self, *argv: str) -> Result:
        code = self(*argv)
        return Result(code, self.stdout, self.stderr)

    def rebuild(self, *argv: str) -> int:
        return self("rebuild", *argv, "--ssh-key", str(self.key))

    def complete(self, line: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """The words the shell's completion offers for `line` (options left out)."""
        environ = {"MCLU_CONFIG": str(self.inventory), "_ARGCOMPLETE": "1"}
        shell = {"COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": IFS}
        for key, value in {**environ, **shell}.items():
            monkeypatch.setenv(key, value)
        env = commands.Env(
            environ=environ,
            printer=output.Printer(out=io.StringIO(), err=io.StringIO()),
            open_session=self.opener,
        )
        parser = main.build_parser()
        completion.attach(parser, env)
        out = io.StringIO()
        _Finder()(parser, exit_method=lambda *_: None, output_stream=out)
        words = [w.strip() for w in out.getvalue().split(IFS)]  # a lone word ends in a space
        return [w for w in words if w and not w.startswith("-")]

    # -- what was printed --------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        return self.out.getvalue()

    @property
    def stderr(self) -> str:
        return self.err.getvalue()

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]

    # -- what the hosts hold -----------------------------------------------------------------

    def host(self, name: str) -> fake.FakeHost:
        return self.cluster.hosts[name]

    def guest(self, host: str, name: str) -> model.Guest:
        return self.host(host).guests[name]

    def state(self, host: str, name: str) -> model.GuestState | None:
        found = self.host(host).guests.get(name)
        return None if found is None else found.state

    def where(self, name: str) -> list[str]:
        """The hosts that hold a guest of that name."""
        return [h for h, host in self.cluster.hosts.items() if name in host.guests]


def make_repository(tmp_path: Path, index: str = INDEX) -> Path:
    """A local, unsigned virt-builder repository (listing templates downloads nothing)."""
    repo = tmp_path / "repo"
    (repo / "repos.d").mkdir(parents=True)
    (repo / "index").write_text(index)
    (repo / "repos.d" / "local.conf").write_text(f"[local]\nuri=file://{repo}/index\n")
    return repo


class _Finder(CompletionFinder):
    """argcomplete's finder, its debug stream on stderr: by default it takes file descriptor
    9, which under pytest is faulthandler's (closing it fails pytest's exit)."""

    def _init_debug_stream(self) -> None:
        argcomplete.io.debug_stream = sys.stderr


# --- rebuild on fake hosts: the disk work canned, personalisation stood in for -----------------

DISK = f"{IMAGES}/web1.qcow2"  # web1's disk (builders.built("web1", ...))
NEW, OLD = DISK + ".mclu-rebuild", DISK + ".mclu-old"
# The harness repository's newest tiny, named by its digest as mclu caches it.
BASE = f"{IMAGES}/mclu-templates/tiny.x86_64.r3.{SHA[:16]}.raw"
# The base web1's disk is on: named as mclu named bases before they carried their digest.
OLD_BASE = f"{IMAGES}/mclu-templates/tiny.x86_64.r2.raw"


class Shell(dict[tuple[str, ...], CommandResult]):
    """A fake host's commands where anything not canned succeeds silently, as on a host
    where the disk work goes well (the build steps' exact commands are build's to test)."""

    def get(self, key: tuple[str, ...], default: Any = None) -> CommandResult:
        found = super().get(key)
        return found if found is not None else CommandResult(key, 0)


def rebuild_disk_commands(host: fake.FakeHost, *, base_cached: bool = True) -> None:
    """The commands of rebuilding web1 whose answers matter: its disk (a qcow2 overlay on
    OLD_BASE), no old disk left over, the newest base cached on the host or not."""
    info = json.dumps(
        [
            {
                "format": "qcow2",
                "virtual-size": 1 << 30,
                "actual-size": 1 << 20,
                "backing-filename": OLD_BASE,
                "backing-filename-format": "raw",
            },
            {"format": "raw", "virtual-size": 128 << 20, "actual-size": 17 << 20},
        ]
    )
    host.commands = Shell(host.commands)
    host.commands.update(
        [
            fake.canned(host_commands.disk_info([DISK]), info.encode()),
            fake.canned(["test", "-e", OLD], exit_status=1),
            fake.canned(host_commands.storage_scan(IMAGES), storage_scan(cached=base_cached)),
        ]
    )


def storage_scan(*, cached: bool) -> bytes:
    """The image directory's scan (`mclu.read.storage.read`): 10 GiB free, the newest tiny
    base in the cache or not, nothing left over."""
    base = BASE.rpartition("/")[2] + "\n" if cached else ""
    return (
        f"@now 0\n@df\nAvail\n10737418240\n@dfstatus 0\n@cache\n{base}@partial\n@locks\n".encode()
    )


Personalise = Callable[[str], Awaitable[model.GuestTraits]]  # guest name → what it found
