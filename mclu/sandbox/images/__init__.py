"""The sandbox's own virt-builder template repository, built from Debian packages only.

`build_repository(state_dir)` makes (or finds cached) a signed local repository with the
templates `tiny` (busybox + the Debian kernel, boots in seconds under TCG) and `debian-12`
(debootstrap minbase with systemd and sshd). `python -m mclu.sandbox.images` runs it.
Anything not exported here is private to this package.
"""

from mclu.sandbox.images.repository import (
    build_repository,
    default_state_dir,
    read_manifest,
    repo_conf,
    repo_dir,
    virt_builder_env,
)

__all__ = [
    "build_repository",
    "default_state_dir",
    "read_manifest",
    "repo_conf",
    "repo_dir",
    "virt_builder_env",
]
