"""What the commands' output shares: `Printer` (the one place that writes to the terminal),
the error document, the host document of every `failed_hosts` list, and the progress
reporters of long commands.

Each command family renders its own results (cli/read_commands, templates, build, ...):
renderers take data and return text or JSON-ready dicts. The JSON shapes are documented in
docs/cli.md.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from mclu import errors, model

JSON_VERSION = 1
log = logging.getLogger(__name__)


@dataclass
class Printer:
    """Where output goes: results to `out`, notes and errors to `err`."""

    out: TextIO
    err: TextIO

    def text(self, text: str) -> None:
        print(text, file=self.out)

    def json(self, document: dict[str, Any]) -> None:
        print(json.dumps({"version": JSON_VERSION, **document}, indent=2), file=self.out)

    def json_line(self, document: dict[str, Any]) -> None:
        """One compact JSON object per line, for streams of events."""
        print(json.dumps(document), file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(f"mclu: {text}", file=self.err)

    def error(self, error: BaseException | str) -> None:
        print(f"mclu: error: {error}", file=self.err)


def error_json(error: errors.MCLUError) -> dict[str, Any]:
    """`{"error": {"type", "message", "exit_status", ...}}`: the error's class, its one line,
    and its keyword fields (host, name, path...) where they are plain JSON values."""
    fields = {
        key: value
        for key, value in vars(error).items()
        if not key.startswith("_") and key != "detail" and _plain(value)
    }
    return {
        "version": JSON_VERSION,
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "exit_status": error.exit_code,
            **{
                k: list(v) if isinstance(v, tuple) else v
                for k, v in fields.items()
                if k not in ("type", "message", "exit_status")
            },
        },
    }


def _plain(value: object) -> bool:
    """A value JSON shows as itself: a string, number, bool, null, or a sequence of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def host_json(name: str, result: model.HostSnapshot | errors.HostError) -> dict[str, Any]:
    """One host as `status --json` shows it; also each of `failed_hosts` in other commands."""
    if isinstance(result, errors.HostError):
        return {"name": name, "state": result.state, "error": str(result)}
    return {
        "name": name,
        "state": "on",
        "error": None,
        "address": result.spec.address,
        "tags": list(result.spec.tags),
        "hostname": result.facts.hostname,
        "cpus": result.cpus,
        "vcpus_allocated": result.vcpus_allocated,
        "vcpus_free": result.vcpus_free,
        "memory_total": result.memory_total,
        "memory_allocated": result.memory_allocated,
        "memory_free": result.memory_free,
        "memory_reserved": result.spec.reserve_memory,
        "guests": len(result.guests),
        "guests_running": len(result.active_guests),
        # Its active libvirt networks and its bridges, by name; null when it could not say.
        "networks": _names(result.facts.networks),
        "bridges": _names(result.facts.bridges),
    }


def _names(names: tuple[str, ...] | None) -> list[str] | None:
    return None if names is None else list(names)


# --- progress of long commands -----------------------------------------------------------------


PLAN_WARNING = "warning: "  # starts a plan line that progress shows even off a terminal


class LineReporter:
    """Progress for people: a line per step, a bar per transfer (stderr, terminals only)."""

    def __init__(self, err: TextIO, bars: bool) -> None:
        self.err = err
        self.bars = bars
        self._bars: dict[str, tqdm[Any]] = {}

    def step(self, host: str | None, guest: str | None, text: str) -> None:
        where = ": ".join(p for p in (host, guest) if p)
        self._write(f"{where}: {text}" if where else text)

    def transfer(self, key: str, done: int, total: int) -> None:
        if not self.bars:
            return
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = tqdm(
                total=total or None,
                desc=key,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self.err,
                leave=True,
                dynamic_ncols=True,
            )
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()

    def _write(self, line: str) -> None:
        if self.bars:
            tqdm.write(line, file=self.err)
        elif line.startswith(PLAN_WARNING):
            # A plan's warning (plan_text) is for people even when no one watches: a cron
            # job's mail shows it as `mclu: warning: ...` (main.logging_to).
            log.warning("%s", line)
        else:  # not a terminal: quiet, but -v shows the steps
            log.info("%s", line)


class JsonReporter:
    """Progress for programs: one JSON object per line on stdout, transfers at most 4 a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last: dict[str, float] = {}

    def step(self, host: str | None, guest: str | None, text: str) -> None:
        self._emit({"event": "step", "host": host, "guest": guest, "text": text})

    def transfer(self, key: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last.get(key, 0.0) < 0.25:
            return
        self._last[key] = now
        self._emit({"event": "transfer", "what": key, "done": done, "total": total})

    def close(self) -> None:
        pass

    def _emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), file=self.out, flush=True)
