"""The templates the sandbox repository holds, and what each build depends on.

A recipe names its shell scripts (package data in `scripts/`) and the inputs that decide
its content: parameters, and versions of Debian packages (read from this machine by
`inputs.recipe_inputs`). `build_key` hashes them; a template is rebuilt exactly when its key
changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mclu.sandbox.images.debian import SUITE

# Bump when the meaning of a key changes without any hashed input changing.
KEY_FORMAT = 1

# xz options: 16 MiB blocks keep the template seekable (nbdkit-xz-plugin(1)). Preset 1, not
# the default 6: measured on 300 MiB of shared libraries, 13.7 s against 81.8 s for 12% more
# bytes; xz of the debian-12 disk was 592 of its 740 s build at -6, paid by every fresh sandbox
# (CI) and decompression is as fast either way.
XZ_OPTIONS = ("-1", "--threads=0", "--block-size=16777216")

# Packages debootstrap adds to minbase for the debian-12 template (debian-root.sh installs
# linux-image-amd64 after them, from the updated suites).
DEBIAN_INCLUDE = (
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
    "openssh-server",
    # Answers libvirt's guest-agent channel (addresses, the `agent` readiness check); udev
    # starts it when the channel's port appears.
    "qemu-guest-agent",
    "iproute2",
    "ca-certificates",
    "less",
    "procps",
    # systemd-logind needs D-Bus, and logind is what powers off on the ACPI power button.
    "dbus",
)
# Installed by debian-root.sh after the kernel, with apt (debootstrap resolves alternatives
# poorly): cloud-init, inactive unless a NoCloud seed is attached (ds-identify disables it when
# it finds no datasource), so one image serves both debian-12 and debian-12-cloud;
# cloud-guest-utils gives it growpart, to grow the root partition to a larger disk.
DEBIAN_CLOUD_PACKAGES = ("cloud-init", "cloud-guest-utils")
# Packages of this machine the tiny template copies files from (the kernel aside).
TINY_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libgmp10",
    "libtomcrypt1",
    "libtommath1",
    "zlib1g",
)
# Their versions, plus base-files (it changes with every point release) and libc6, stand for
# the mirror's state in the build key (from this machine's apt lists: no network needed).
DEBIAN_KEY_PACKAGES = (
    *DEBIAN_INCLUDE,
    *DEBIAN_CLOUD_PACKAGES,
    "linux-image-amd64",
    "base-files",
    "libc6",
    "systemd",
)


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
    # More index entries published from the same file: {name: (title, notes)}.
    also: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Built only when named (`mclu-sandbox templates debian-13`), never by default: the
    # test suite and the demo do not need it.
    on_demand: bool = False

    @property
    def debootstrapped(self) -> bool:
        """A Debian root made by debootstrap from the mirror (debian-root.sh)."""
        return "debian-root.sh" in self.scripts


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
        "acpid powers off on the ACPI power button. dropbear serves ssh (keys only) with the\n"
        "OpenSSH host keys found in /etc/ssh, converted at boot. No package manager.\n"
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
        "openssh-server, qemu-guest-agent and the Debian kernel, updated from\n"
        "bookworm-updates and bookworm-security.\n"
        "\n"
        "extlinux; console on ttyS0 (serial getty); eth0 by DHCP. root has an empty password\n"
        "for the console only (sshd wants a key in /root/.ssh). The ssh host keys are made\n"
        "at template build time: regenerate them per guest.\n"
        "\n"
        "cloud-init is installed but stays disabled unless a NoCloud seed (a volume labelled\n"
        "cidata) is attached: the same file is published as debian-12-cloud."
    ),
    params={
        "suite": SUITE,
        "include": ",".join(DEBIAN_INCLUDE),
        "packages": ",".join(DEBIAN_CLOUD_PACKAGES),
    },
    also={
        "debian-12-cloud": (
            "Debian 12 (bookworm) minbase with cloud-init (NoCloud)",
            "The debian-12 template's file, for personalisation by cloud-init from a NoCloud\n"
            "seed (an ISO 9660 volume labelled cidata) instead of libguestfs.\n"
            "\n"
            "Datasources: NoCloud only; cloud-init leaves the network alone (eth0 by DHCP\n"
            "through ifupdown, as in debian-12) and prints its final line, 'Cloud-init v. ...\n"
            "finished at ...', on the serial console ttyS0. growpart grows the root partition.",
        )
    },
)

# The same image from Debian 13 (trixie), whose cloud-init (25.1) runs its stages in one Python
# process where Debian 12's (22.4) starts four: what a cloud-init first boot costs with the
# cloud-init users' current images have (bench/build.py --cloud-init --image debian-13).
DEBIAN_13 = Recipe(
    name="debian-13",
    title="Debian 13 (trixie) minbase",
    osinfo="debian13",
    size_mib=DEBIAN_12.size_mib,
    scripts=DEBIAN_12.scripts,
    notes=DEBIAN_12.notes.replace("bookworm", "trixie").replace("debian-12", "debian-13"),
    params={**DEBIAN_12.params, "suite": "trixie"},
    also={
        "debian-13-cloud": (
            "Debian 13 (trixie) minbase with cloud-init (NoCloud)",
            DEBIAN_12.also["debian-12-cloud"][1].replace("debian-12", "debian-13"),
        )
    },
    on_demand=True,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (TINY, DEBIAN_12, DEBIAN_13)}


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


def recipe_scripts(recipe: Recipe) -> dict[str, bytes]:
    """The text of `recipe`'s scripts, by name."""
    return {name: script_path(name).read_bytes() for name in recipe.scripts}
