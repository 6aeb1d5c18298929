"""What every command uses: the outside world (Env), the hosts and templates it names, the
guests' login inputs, progress, and the notes and exit code a snapshot gives.

The commands themselves live one family per module beside this one (read_commands, templates,
prune, build, rebuild, lifecycle, migration, power, cleanup), each rendering its own output;
each reads as a paragraph: load the inventory, gather every host at once, render.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mclu import errors, model
from mclu.act import build as mclu_build
from mclu.act import rebuild as mclu_rebuild
from mclu.cli import output
from mclu.config import catalogue, inventory, sources
from mclu.decide import cleanup, cloudinit
from mclu.read import snapshot


@dataclass
class Env:
    """What a command may use from the outside world; tests pass their own."""

    environ: Mapping[str, str]
    printer: output.Printer
    open_session: snapshot.Opener
    # How a rebuild personalises a new disk (libguestfs here); tests on fake hosts stand in.
    personalise: mclu_rebuild.Personaliser = mclu_rebuild.personalise


def load_hosts(args: argparse.Namespace, env: Env) -> tuple[model.Inventory, list[model.HostSpec]]:
    inv = inventory.load(inventory.locate(args.config, env.environ))
    return inv, inventory.select(inv, names=args.host or None, tags=args.tag or None)


async def read_templates(
    args: argparse.Namespace, env: Env
) -> tuple[dict[str, catalogue.Template], sources.Found]:
    """mclu's templates and every repository's, fetched off the event loop."""
    mine = catalogue.load(catalogue.locate(args.templates, env.environ))
    repos = sources.read_sources(template_repos(args, env))
    return mine, await asyncio.to_thread(sources.find_templates, repos)


def template_repos(args: argparse.Namespace, env: Env) -> list[Path]:
    """The inventory's template_repos, else virt-builder's repos.d places.

    Listing templates needs no hosts, so a missing inventory is not an error here.
    """
    path = inventory.locate(args.config, env.environ)
    if path.exists():
        configured = inventory.load(path).template_repos
        if configured is not None:
            return [Path(p) for p in configured]
    return sources.default_repo_dirs(env.environ)


def build_inputs(args: argparse.Namespace, env: Env) -> mclu_build.Inputs:
    """Root's authorized keys (--ssh-key, else ~/.ssh/id_*.pub) and the password file.

    A guest given neither a key nor a password is one nobody can log in to: refused unless
    --no-login says that is meant (a build or rebuild on a controller whose ~/.ssh holds no
    key would otherwise make such guests without a word).
    """
    password = args.root_password_file
    if args.no_login:
        given = [
            o for o, v in (("--ssh-key", args.ssh_key), ("--root-password-file", password)) if v
        ]
        if given:
            raise errors.UsageError(f"--no-login and {given[0]} do not go together")
        return mclu_build.Inputs(user_data=user_data(getattr(args, "user_data", None)))
    home = Path(env.environ.get("HOME", "~")).expanduser()
    paths = [Path(p) for p in args.ssh_key] if args.ssh_key else sorted(home.glob(".ssh/id_*.pub"))
    keys = []
    for path in paths:
        keys += _key_lines(path)
    if password is not None and not Path(password).is_file():
        raise errors.UsageError(f"no root password file {password}")
    if not keys and password is None:
        raise errors.UsageError(
            f"no ssh key for the guests' root: {home}/.ssh has no id_*.pub; give --ssh-key "
            "FILE (or --root-password-file FILE), or --no-login for guests nobody logs in to"
        )
    return mclu_build.Inputs(
        ssh_authorized_keys=tuple(keys),
        root_password_file=password,
        user_data=user_data(getattr(args, "user_data", None)),
    )


def user_data(path: str | None) -> dict[str, Any]:
    """--user-data FILE read and checked (`cloudinit.parse_user_data`); {} without it."""
    if path is None:
        return {}
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise errors.UsageError(f"--user-data {path}: cannot read: {e}") from None
    return cloudinit.parse_user_data(text, path)


def check_user_data(args: argparse.Namespace, templates: Iterable[model.ResolvedTemplate]) -> None:
    """--user-data is for cloud-init templates: refused when a guest's template is not one."""
    if getattr(args, "user_data", None) is None:
        return
    for template in templates:
        if not cloudinit.uses_cloud_init(template):
            raise errors.UsageError(
                f"--user-data: template {template.name} is personalised by "
                f'{template.personalise}, not cloud-init (its personalise = "cloud-init" '
                "takes user data)"
            )


def _key_lines(path: Path) -> list[str]:
    """The public key lines of one key file; a private key or an empty file is refused."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not a text file"
        raise errors.UsageError(f"cannot read ssh key {path}: {reason}") from None
    if any(line.startswith("-----BEGIN") for line in lines):
        raise errors.UsageError(f"ssh key {path} is a private key: give its .pub file")
    if not lines:
        raise errors.UsageError(f"ssh key {path} holds no key")
    return lines


def progress_reporter(
    args: argparse.Namespace, env: Env
) -> output.LineReporter | output.JsonReporter:
    if args.json:
        return output.JsonReporter(env.printer.out)
    return output.LineReporter(env.printer.err, bars=env.printer.err.isatty())


def note_leftovers(
    snap: model.Snapshot, env: Env, scans: Mapping[str, model.LeftoverScan | None] | None = None
) -> None:
    """One stderr line when interrupted runs left something that `mclu cleanup` removes."""
    text = cleanup.note(cleanup.count(snap, scans))
    if text is not None:
        env.printer.note(text)


def note_failed_hosts(snap: model.HostResults[Any], env: Env) -> None:
    for error in snap.failed.values():
        env.printer.note(str(error))


def exit_code(snap: model.HostResults[Any]) -> int:
    """1 when a host failed; a host that is merely off is an answer, not a failure."""
    failed = [e for e in snap.failed.values() if e.state != "off"]
    return errors.EXIT_FAILED if failed else errors.EXIT_OK
