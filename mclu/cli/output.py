"""Rendering: snapshots, guests and templates as tables for people or JSON for programs.

Renderers take data and return text or JSON-ready dicts; `Printer` is the one place that
writes to the terminal. The JSON shapes are documented in docs/cli.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from mclu import errors, model, sizes
from mclu.decide.build import BuildPlan, GuestPlan

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
    }


# --- build plan (--dry-run, and before building) -------------------------------------------


PLAN_WARNING = "warning: "  # starts a plan line that progress shows even off a terminal


def plan_text(plan: BuildPlan) -> str:
    """One line per guest (host, why, what it gets), then one line per base transfer, then a
    warning per host that did not answer (the names could not be checked there)."""
    label = _base_label(plan)
    lines = [
        f"build {len(plan.guests)} {'guest' if len(plan.guests) == 1 else 'guests'} from {label}:"
    ]
    lines += [f"  {_guest_line(plan, g)}" for g in plan.guests]
    sends = [g for g in plan.guests if g.send_bytes]
    lines += [f"send {label} to {g.host}: {sizes.human(g.send_bytes)}" for g in sends]
    if len(sends) > 1:
        lines.append(f"send in all: {sizes.human(plan.send_bytes)} over {plan.transport}")
    elif not plan.hosts_needing_base:
        lines.append(f"nothing to send: {label} is cached on every host chosen")
    lines += [f"{PLAN_WARNING}{w}" for w in plan.warnings]
    return "\n".join(lines)


def _guest_line(plan: BuildPlan, guest: GuestPlan) -> str:
    label = _base_label(plan)
    if guest.base_cached:
        base = f"{label} cached there"
    elif guest.send_bytes:
        base = f"{label} sent there"
    else:
        first = next(g for g in plan.guests if g.host == guest.host and g.send_bytes)
        base = f"{label} sent there with {first.name}"
    kind = "raw full copy" if guest.full_copy else "overlay"
    vcpus = f"{guest.spec.vcpus} vCPU{'' if guest.spec.vcpus == 1 else 's'}"
    return (
        f"{guest.name} → {guest.host} ({guest.reason}; {base}): {vcpus}, "
        f"{sizes.human(guest.spec.memory)} memory, {sizes.human(guest.disk_size)} {kind} "
        f"{guest.disk_path}"
    )


def _base_label(plan: BuildPlan) -> str:
    return f"{plan.template.name} r{plan.template.base.revision}"


def plan_json(plan: BuildPlan) -> dict[str, Any]:
    """The plan for programs: sizes in bytes, one entry per guest in the order named."""
    base = plan.template.base
    return {
        "template": plan.template.name,
        "revision": base.revision,
        "transport": plan.transport,
        "send_bytes": plan.send_bytes,
        "hosts_needing_base": list(plan.hosts_needing_base),
        "guests": [
            {
                "name": g.name,
                "host": g.host,
                "reason": g.reason,
                "domain_type": g.spec.domain_type,
                "memory": g.spec.memory,
                "vcpus": g.spec.vcpus,
                "network": g.spec.network,
                "disk_path": g.disk_path,
                "disk_format": g.spec.disk_format,
                "disk_size": g.disk_size,
                "full_copy": g.full_copy,
                "base_path": g.base_path,
                "base_cached": g.base_cached,
                "send_bytes": g.send_bytes,
            }
            for g in plan.guests
        ],
        "warnings": list(plan.warnings),
    }


# --- progress of long commands -----------------------------------------------------------------


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


def built_text(built: Sequence[Any], seconds: float) -> str:
    """`web1 runs on ham0 (ready in 21.3 s, by console:login:)`; the rule is said when the
    guests passed one, `started in` when they were not waited for."""
    names = ", ".join(f"{b.name} runs on {b.host}" for b in built)
    rules = sorted({b.ready for b in built})
    if rules == [""]:
        return f"{names} (started in {seconds:.1f} s, not waited for)"
    return f"{names} (ready in {seconds:.1f} s, by {', '.join(rules)})"


def built_json(built: Sequence[Any], seconds: float) -> dict[str, Any]:
    return {
        "event": "done",
        "built": [{"name": b.name, "host": b.host, "ready": b.ready or None} for b in built],
        "seconds": round(seconds, 3),
    }
