"""Every command line mclu runs on a host, in one place: argv lists, never shell text built
from input (a script that needs a shell takes its values as positional parameters).

The fake host (`mclu.hosts.fake`) answers these same lines, and the contract suite runs each
against a real sandbox host, so the fake cannot drift from the truth.
"""

from __future__ import annotations

from mclu import hostpaths


def console_tail(name: str, size: int) -> list[str]:
    """The last `size` bytes of the guest's console log (this boot's: the log starts empty at
    each boot)."""
    return ["tail", "-c", str(size), "--", hostpaths.console_log(name)]
