"""Boot a disk image under plain qemu (TCG) and talk to its serial console.

Used to prove that templates boot and to smoke-test them: no libvirt, no network for the
guest unless asked (then only qemu user networking with `restrict=on`).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Terminal control sequences (bash's bracketed paste, ash's cursor query) in command output.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class ConsoleTimeout(Exception):
    """The console did not show the expected text in time; `seen` is its recent output."""

    def __init__(self, pattern: str, timeout: float, seen: str) -> None:
        super().__init__(
            f"no {pattern!r} on the console within {timeout:.0f} s; last output:\n{seen[-2000:]}"
        )
        self.pattern = pattern
        self.seen = seen


class Console:
    """The serial console of a running qemu: read with `expect`, write with `send`."""

    def __init__(self, process: subprocess.Popen[bytes], qmp_path: Path) -> None:
        self.process = process
        self.qmp_path = qmp_path
        self.output = ""
        self._pos = 0

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for `pattern` (a regex) in the output after the previous match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            match = regex.search(self.output, self._pos)
            if match:
                self._pos = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise ConsoleTimeout(pattern, timeout, self.output)
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise ConsoleTimeout(pattern, timeout, self.output)
                self.output += chunk.decode("utf-8", "replace").replace("\r", "")

    def send(self, text: str) -> None:
        """Type `text` on the console."""
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def login(self, user: str = "root", password: str = "", timeout: float = 120) -> None:
        """Log in at the getty prompt and wait for a shell prompt."""
        self.expect(r"login: $", timeout)
        self.send(user + "\n")
        if password:
            self.expect(r"[Pp]assword: ?$", 30)
            self.send(password + "\n")
        # busybox ash asks the terminal for the cursor position (ESC [6n) after its prompt.
        self.expect(r"[#$] (?:\x1b\[6n)?$", 30)

    def run(self, command: str, timeout: float = 30) -> str:
        """Run a shell command at the prompt and return what it printed."""
        # The typed line echoes back (maybe wrapped); the markers printed by `echo` do not
        # appear in it because of the quotes splitting them.
        tag = f"{time.monotonic_ns()}"
        self.send(f"echo '<'mclu{tag}; {command}; echo '>'mclu{tag}\n")
        match = self.expect(rf"(?s)<mclu{tag}\n(.*?)>mclu{tag}\n", timeout)
        return _ESCAPES.sub("", match.group(1))

    def powerdown(self, timeout: float = 60) -> int:
        """Press the ACPI power button (QMP `system_powerdown`); return qemu's exit status."""
        with socket.socket(socket.AF_UNIX) as qmp:
            qmp.connect(str(self.qmp_path))
            qmp.recv(4096)  # greeting
            qmp.sendall(b'{"execute": "qmp_capabilities"}\n')
            qmp.recv(4096)
            qmp.sendall(b'{"execute": "system_powerdown"}\n')
            qmp.recv(4096)
        # Keep reading the console so a full pipe cannot stall the guest's shutdown.
        with contextlib.suppress(ConsoleTimeout):
            self.expect(r"(?!)", timeout)
        return self.process.wait(1)


def qemu_argv(disk: Path, *, memory_mib: int, qmp_path: Path, network: bool) -> list[str]:
    """The qemu command line: TCG, serial console on stdio, disk on virtio."""
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        str(memory_mib),
        "-nographic",
        "-monitor",
        "none",
        "-qmp",
        f"unix:{qmp_path},server=on,wait=off",
        "-drive",
        f"file={disk},if=virtio,format=raw,snapshot=on",
    ]
    if network:
        argv += ["-nic", "user,model=virtio-net-pci,restrict=on"]
    else:
        argv += ["-nic", "none"]
    return argv


@contextmanager
def boot(disk: Path, *, memory_mib: int = 256, network: bool = False) -> Iterator[Console]:
    """Boot `disk` (raw; writes go to a throwaway snapshot) and yield its console.

    The qemu process is killed by its PID when the block ends, however it ends.
    """
    with tempfile.TemporaryDirectory(prefix="mclu-console-") as tmp:
        qmp_path = Path(tmp) / "qmp.sock"
        argv = qemu_argv(disk, memory_mib=memory_mib, qmp_path=qmp_path, network=network)
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            yield Console(process, qmp_path)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
