"""The repository's signing key: a private GNUPGHOME in the sandbox state dir, never ~/.gnupg.

The key is made once and kept, so clients that trusted key.asc keep trusting new indexes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEY_USER_ID = "mclu sandbox template repository <mclu-sandbox@localhost>"


class GnuPG:
    """gpg commands against one GNUPGHOME, with no passphrase and no pinentry."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def run(self, *args: str) -> str:
        argv = [
            "gpg",
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def fingerprint(self) -> str | None:
        """The fingerprint of the first secret key, or None when there is none."""
        listing = self.run("--with-colons", "--list-secret-keys")
        for line in listing.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        return None

    def ensure_key(self) -> str:
        """Return the signing key's fingerprint, making the key on first use."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        fpr = self.fingerprint()
        if fpr is None:
            self.run("--quick-generate-key", KEY_USER_ID, "ed25519", "sign", "never")
            fpr = self.fingerprint()
        if fpr is None:
            raise RuntimeError(f"gpg made no key in {self.home}")
        return fpr

    def export_public(self, fpr: str, dest: Path) -> None:
        """Write the armored public key to `dest`."""
        dest.write_text(self.run("--armor", "--export", fpr))

    def clearsign(self, fpr: str, source: Path, dest: Path) -> None:
        """Clearsign `source` into `dest` (virt-builder's index.asc)."""
        self.run("--yes", "--local-user", fpr, "--output", str(dest), "--clearsign", str(source))

    def stop_agent(self) -> None:
        """Stop the gpg-agent that gpg started for this home (it would linger otherwise)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )


@contextmanager
def gnupg(home: Path) -> Iterator[GnuPG]:
    """A GnuPG for `home` whose agent is stopped when the block ends."""
    gpg = GnuPG(home)
    try:
        yield gpg
    finally:
        gpg.stop_agent()
