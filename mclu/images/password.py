"""The root password's hash, for personalisation by the appliance and by a cloud-init seed."""

from __future__ import annotations

import subprocess


def sha512_crypt(path: str) -> str:
    """SHA-512 crypt ("$6$...") of the first line of the password file `path`, by openssl (the
    password goes to it on stdin, never on a command line, and is dropped at once).

    :raises OSError: the file cannot be read.
    :raises ValueError: its first line is empty, or openssl failed.
    """
    with open(path, encoding="utf-8") as file:
        password = file.readline().rstrip("\r\n")
    if not password:
        raise ValueError(f"the first line of the password file {path} is empty")
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    del password
    if result.returncode != 0 or not result.stdout.startswith("$6$"):
        raise ValueError(f"openssl passwd failed: {result.stderr.strip()}")
    return result.stdout.strip()
