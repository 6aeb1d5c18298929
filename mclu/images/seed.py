"""NoCloud seeds made on the controller: the ssh host keys and root password hash they
carry, and the ISO 9660 volume (label `cidata`) that holds their `meta-data` and `user-data`.

What a seed says is decided in `mclu.decide.cloudinit`; this module makes the bytes. The ISO
is written with pycdlib (pure Python, no genisoimage or xorriso needed on the controller):
ISO 9660 level 3 names with Rock Ridge and Joliet ones, so the guest's kernel shows the files
as `meta-data` and `user-data` whichever extension it reads. A seed holds private host keys
and a password hash: it is made in memory and sent to the guest's host on ssh's stdin, never
written on the controller (the keys' files live only while ssh-keygen makes them).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib

from mclu import errors, runtmp
from mclu.decide import cloudinit
from mclu.images import password

# (ISO 9660 name, Rock Ridge and Joliet name) of the seed's two files
_FILES = (("/METADATA.;1", cloudinit.META_DATA), ("/USERDATA.;1", cloudinit.USER_DATA))


def iso_bytes(seed: cloudinit.Seed) -> bytes:
    """The seed's ISO 9660 volume, labelled `cidata`, holding `meta-data` and `user-data`."""
    documents = {
        cloudinit.META_DATA: cloudinit.meta_data(seed).encode(),
        cloudinit.USER_DATA: cloudinit.user_data(seed).encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=cloudinit.VOLUME_ID)
    try:
        for iso_name, name in _FILES:
            data = documents[name]
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """(volume label, {Rock Ridge file name: text}) of an ISO: what a guest would see."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode("ascii").rstrip()
        files = {}
        for _iso_name, name in _FILES:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return label, files
    finally:
        iso.close()


def host_keys(hostname: str) -> tuple[cloudinit.HostKey, ...]:
    """A new ssh host key pair of each type cloud-init takes, made by ssh-keygen at once in a
    private directory of this run (removed before this returns).

    :raises errors.PersonalizationFailed: ssh-keygen missing or failing.
    """
    with runtmp.tempdir(runtmp.HOSTKEYS_PREFIX) as directory:
        procs = {}
        try:
            for kind in cloudinit.HOST_KEY_TYPES:
                path = Path(directory) / f"ssh_host_{kind}_key"
                argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{hostname}"]
                procs[kind] = subprocess.Popen(
                    [*argv, "-f", str(path)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            keys = []
            for kind, proc in procs.items():
                _, stderr = proc.communicate()
                if proc.returncode != 0:
                    raise OSError(f"ssh-keygen failed: {stderr.decode(errors='replace').strip()}")
                path = Path(directory) / f"ssh_host_{kind}_key"
                keys.append(
                    cloudinit.HostKey(
                        kind=kind,
                        private=path.read_text(encoding="ascii"),
                        public=path.with_name(path.name + ".pub").read_text(encoding="ascii"),
                    )
                )
            return tuple(keys)
        except OSError as e:
            raise errors.PersonalizationFailed(
                guest=hostname, step="generate ssh host keys", reason=str(e)
            ) from e
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                if proc.stderr:
                    proc.stderr.close()


def password_hash(path: str, guest: str) -> str:
    """SHA-512 crypt ("$6$...") of the first line of the password file `path` (password.py).

    :raises errors.PersonalizationFailed: an unreadable or empty file, openssl failing.
    """
    try:
        return password.sha512_crypt(path)
    except (OSError, ValueError) as e:
        raise errors.PersonalizationFailed(guest=guest, step="root password", reason=str(e)) from e
