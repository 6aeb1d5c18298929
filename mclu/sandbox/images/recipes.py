"""The templates the sandbox repository holds, and what each build depends on.

A recipe names its shell scripts (package data in `scripts/`) and the inputs that decide
its content: parameters, and versions of Debian packages. `build_key` hashes them; a template
is rebuilt exactly when its key changes. The functions that read this machine's package
state are here too, beside the pure parsers they use.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

# Bump when the meaning of a key changes without any hashed input changing.
KEY_FORMAT = 1

# xz options: 16 MiB blocks keep the template seekable (nbdkit-xz-plugin(1)).
XZ_OPTIONS = ("-6", "--threads=0", "--block-size=16777216")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SUITE = "bookworm"

# Packages debootstrap adds to minbase for the debian-12 template (debian-root.sh installs
# linux-image-amd64 after them, from the updated suites).
DEBIAN_INCLUDE = (
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "less",
    "procps",
    # systemd-logind needs D-Bus, and logind is what powers off on the ACPI power button.
    "dbus",
)
# Their versions, plus base-files (it changes with every point release) and libc6, stand for
# the mirror's state in the build key (from this machine's apt lists: no network needed).
DEBIAN_KEY_PACKAGES = (*DEBIAN_INCLUDE, "linux-image-amd64", "base-files", "libc6", "systemd")


@dataclass(frozen=True)
class Recipe:
    """How to make one template, and how it is described in the index."""

    name: str
    title: str
    osinfo: str
    size_mib: int
    scripts: tuple[str, ...]
    notes: str
    params: Mapping[str, str] = field(default_factory=dict)


TINY = Recipe(
    name="tiny",
    title="mclu tiny (busybox, Debian 12 kernel)",
    osinfo="debian12",
    size_mib=128,
    scripts=("tiny-root.sh", "disk.sh"),
    notes=(
        "A busybox root with this machine's Debian kernel, for fast tests under TCG.\n"
        "\n"
        "/etc/os-release says Debian 12 so libguestfs inspection and virt-customize work.\n"
        "Console on ttyS0; root logs in with an empty password. DHCP with udhcpc on each NIC;\n"
        "acpid powers off on the ACPI power button. No sshd, no package manager.\n"
        "Set passwords with --password-crypto sha512: busybox login cannot check yescrypt,\n"
        "libguestfs's default for Debian 12."
    ),
)

DEBIAN_12 = Recipe(
    name="debian-12",
    title="Debian 12 (bookworm) minbase",
    osinfo="debian12",
    size_mib=1024,
    scripts=("debian-root.sh", "disk.sh"),
    notes=(
        "debootstrap --variant=minbase bookworm with systemd, udev, dbus, ifupdown,\n"
        "openssh-server and the Debian kernel, updated from bookworm-updates and\n"
        "bookworm-security.\n"
        "\n"
        "extlinux; console on ttyS0 (serial getty); eth0 by DHCP. root has an empty password\n"
        "for the console only (sshd wants a key in /root/.ssh). The ssh host keys are made\n"
        "at template build time: regenerate them per guest."
    ),
    params={"suite": SUITE, "include": ",".join(DEBIAN_INCLUDE)},
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (TINY, DEBIAN_12)}


def script_path(name: str) -> Path:
    """The file system path of a packaged script (the package is installed unzipped)."""
    return Path(str(resources.files(__package__ or "mclu.sandbox.images") / "scripts" / name))


def build_key(recipe: Recipe, scripts: Mapping[str, bytes], inputs: Mapping[str, str]) -> str:
    """The hex SHA-256 of everything that decides a template's content.

    `scripts` maps script names to their text, `inputs` holds package versions and other
    facts of the build machine. Order of the mappings does not matter.
    """
    document = {
        "format": KEY_FORMAT,
        "name": recipe.name,
        "size_mib": recipe.size_mib,
        "params": dict(recipe.params),
        "xz": list(XZ_OPTIONS),
        "scripts": {n: hashlib.sha256(text).hexdigest() for n, text in scripts.items()},
        "inputs": dict(inputs),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


# --- pure parsers of Debian tool output ---------------------------------------------------


def parse_dpkg_versions(text: str) -> dict[str, str]:
    """Parse `dpkg-query -W -f '${Package}\\t${Version}\\n'` (or any `name<TAB>version`)."""
    versions: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, version = line.partition("\t")
        if sep and version:
            versions[name] = version
    return versions


def parse_apt_show(text: str) -> dict[str, str]:
    """Parse `apt-cache show --no-all-versions` records into {package: version}."""
    versions: dict[str, str] = {}
    for record in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", record, re.MULTILINE))
        if "Package" in fields and "Version" in fields:
            versions.setdefault(fields["Package"], fields["Version"])
    return versions


def kernel_from_depends(depends: str) -> str | None:
    """The kernel release that a `linux-image-amd64` Depends line names, e.g. 6.1.0-56-amd64."""
    match = re.search(r"\blinux-image-(\d[^\s,(|]*)", depends)
    return match.group(1) if match else None


def mirrors_from_sources(texts: Iterable[str], suite: str = SUITE) -> tuple[str, str]:
    """Pick (mirror, security mirror) for `suite` from apt sources, one-line or deb822.

    Falls back to deb.debian.org for what the sources do not name.
    """
    mirror = security = ""
    for text in texts:
        for uri, suites in _source_entries(text):
            uri = uri.rstrip("/")
            if not uri.startswith(("http://", "https://")):
                continue
            if not security and f"{suite}-security" in suites:
                security = uri
            elif not mirror and suite in suites:
                mirror = uri
    return mirror or DEFAULT_MIRROR, security or DEFAULT_SECURITY_MIRROR


def _source_entries(text: str) -> list[tuple[str, list[str]]]:
    """(uri, suites) of each `deb` entry of a sources.list or a deb822 .sources file."""
    entries: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    for stanza in re.split(r"\n\s*\n", text):
        fields = {k.lower(): v for k, v in re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.M)}
        if "deb" in fields.get("types", "").split() and "uris" in fields:
            suites = fields.get("suites", "").split()
            entries.extend((uri, suites) for uri in fields["uris"].split())
    return entries


# --- reading this machine ------------------------------------------------------------------


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
        host = installed_versions(["busybox-static", f"linux-image-{kver}"])
        inputs.update({f"package:{name}": version for name, version in host.items()})
    elif recipe is DEBIAN_12:
        mirror, security = host_mirrors()
        inputs.update(mirror=mirror, security_mirror=security)
        inputs.update({f"tool:{n}": v for n, v in installed_versions(["debootstrap"]).items()})
        shown = _output(["apt-cache", "show", "--no-all-versions", *DEBIAN_KEY_PACKAGES])
        inputs.update({f"candidate:{n}": v for n, v in parse_apt_show(shown).items()})
    return inputs


def recipe_scripts(recipe: Recipe) -> dict[str, bytes]:
    """The text of `recipe`'s scripts, by name."""
    return {name: script_path(name).read_bytes() for name in recipe.scripts}
