"""`python -m mclu.sandbox.images [--force] [--state-dir DIR] [NAME...]`: build the repository.

Prints progress lines, then the repository, its templates and how to point virt-builder at it.
Exit status 0 on success, 1 when a build fails, 2 for a bad name.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from mclu.errors import MCLUError
from mclu.sandbox.images import recipes, repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mclu.sandbox.images",
        description="Build the sandbox's virt-builder repository.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="templates to build (default: "
        + ", ".join(r.name for r in recipes.RECIPES.values() if not r.on_demand)
        + "; on demand: "
        + ", ".join(r.name for r in recipes.RECIPES.values() if r.on_demand)
        + ")",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default $MCLU_SANDBOX_DIR or /var/tmp/mclu-sandbox",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    state_dir = args.state_dir or repository.default_state_dir()
    started = time.monotonic()
    try:
        repo = repository.build_repository(state_dir, names=args.names or None, force=args.force)
    except MCLUError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"repository: {repo} ({time.monotonic() - started:.1f} s)")
    for built in repository.read_manifest(repo).values():
        print(
            f"  {built.name}: revision {built.revision}, {built.size >> 20} MiB virtual, "
            f"{built.allocated / 2**20:.1f} MiB allocated, {built.compressed_size / 2**20:.1f}"
            f" MiB xz, built {built.built_at} in {built.seconds:.1f} s"
        )
    print(f"conf: {repository.repo_conf(repo)}")
    print(f"use: VIRT_BUILDER_DIRS={repo} XDG_CONFIG_HOME=/nonexistent virt-builder --list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
