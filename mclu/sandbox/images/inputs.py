"""What of this machine a template's build depends on: installed package versions, the
kernel the tiny template borrows, the apt mirrors and their candidate versions (hashed by
`recipes.build_key`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from mclu.sandbox.images.debian import (
    kernel_from_depends,
    mirrors_from_sources,
    parse_apt_show,
    parse_dpkg_versions,
)
from mclu.sandbox.images.recipes import (
    DEBIAN_KEY_PACKAGES,
    TINY,
    TINY_PACKAGES,
    Recipe,
)


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def installed_versions(packages: Iterable[str]) -> dict[str, str]:
    """Versions of installed Debian packages (dpkg); missing ones are left out."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    return parse_dpkg_versions(result.stdout)


def host_kernel() -> str:
    """The kernel release the tiny template borrows: the one linux-image-amd64 depends on."""
    depends = _output(["dpkg-query", "-W", "-f", "${Depends}", "linux-image-amd64"])
    kver = kernel_from_depends(depends)
    if kver is None or not Path(f"/boot/vmlinuz-{kver}").exists():
        raise FileNotFoundError(f"no kernel in /boot for linux-image-amd64 ({depends!r})")
    return kver


def host_mirrors() -> tuple[str, str]:
    """(mirror, security mirror) from this machine's apt sources."""
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    texts = [p.read_text() for p in paths if p.suffix in (".list", ".sources") and p.is_file()]
    return mirrors_from_sources(texts)


def recipe_inputs(recipe: Recipe) -> dict[str, str]:
    """The facts of this machine that `recipe`'s result depends on (see `build_key`)."""
    tools = installed_versions(["e2fsprogs", "extlinux", "xz-utils", "util-linux"])
    inputs = {f"tool:{name}": version for name, version in tools.items()}
    if recipe is TINY:
        kver = host_kernel()
        inputs["kernel"] = kver
        host = installed_versions([*TINY_PACKAGES, f"linux-image-{kver}"])
        inputs.update({f"package:{name}": version for name, version in host.items()})
    elif recipe.debootstrapped:
        # This machine's apt lists are bookworm's: for debian-13 (trixie) they stand for the
        # mirror's state only roughly (its suite is in the key too); `--force` rebuilds it.
        mirror, security = host_mirrors()
        inputs.update(mirror=mirror, security_mirror=security)
        inputs.update({f"tool:{n}": v for n, v in installed_versions(["debootstrap"]).items()})
        shown = _output(["apt-cache", "show", "--no-all-versions", *DEBIAN_KEY_PACKAGES])
        inputs.update({f"candidate:{n}": v for n, v in parse_apt_show(shown).items()})
    return inputs
