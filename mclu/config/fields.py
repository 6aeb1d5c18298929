"""Limits and grammars shared by the inventory, the templates and the planners. Pure."""

from __future__ import annotations

import re

# The same rule as host names: safe as a libvirt name, a file name and a shell word.
GUEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MIN_MEMORY = 16 << 20  # below this no Linux kernel boots
MAX_MEMORY = 16 << 40
MAX_VCPUS = 512  # as the catalogue allows
MAX_DISK = 64 << 40  # larger is a typing mistake on hosts of this size
