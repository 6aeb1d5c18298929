"""Rendering: snapshots, guests and templates as tables for people or JSON for programs.

Renderers take data and return text or JSON-ready dicts; `Printer` is the one place that
writes to the terminal. The JSON shapes are documented in docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from tabulate import tabulate
from tqdm import tqdm

from mclu import errors, model, sizes
from mclu.act import power
from mclu.config import sources
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


# --- templates -----------------------------------------------------------------------------


def templates_table(rows: Iterable[sources.Listed]) -> str:
    table = [
        [
            r.name,
            _from(r),
            "" if r.revision is None else str(r.revision),
            sizes.human(r.size) if r.size else "",
            sizes.human(r.download) if r.download else "",
            r.description,
        ]
        for r in rows
    ]
    headers = ["NAME", "FROM", "REVISION", "SIZE", "DOWNLOAD", "DESCRIPTION"]
    return tabulate(table, headers=headers, tablefmt="plain", disable_numparse=True)


def _from(row: sources.Listed) -> str:
    if row.kind == "repository":
        return row.source if row.arch == "x86_64" else f"{row.source} ({row.arch})"
    missing = "" if row.revision is not None else " (base not found)"
    return f"mclu: {row.base}{missing}"


def templates_json(
    rows: Iterable[sources.Listed], failed: Mapping[str, errors.MCLUError]
) -> dict[str, Any]:
    return {
        "templates": [dataclasses.asdict(r) for r in rows],
        "failed_sources": [{"name": n, "error": str(e)} for n, e in failed.items()],
    }


def template_info_text(template: model.ResolvedTemplate, listed: sources.Listed) -> str:
    c = template.customization
    rows = [
        ("Name", template.name),
        ("From", _from(listed)),
        ("Description", listed.description),
        ("Base", f"{template.base.template} r{template.base.revision} ({template.base.arch})"),
        ("Image", template.source_uri),
        ("Disk size", sizes.human(template.disk_size or template.base.size)),
        ("Memory", sizes.human(template.memory)),
        ("vCPUs", str(template.vcpus)),
        ("Disk bus", template.disk_bus),
        ("Network", template.network or "(the host's)"),
        ("Disk", "full copy" if template.full_copy else "overlay on the cached base"),
    ]
    rows += [("Package", p) for p in c.packages] + [("File", f) for f, _ in c.files]
    rows += [("Run", r) for r in c.run] + [("First boot", r) for r in c.firstboot]
    return tabulate([(f"{k}:", v) for k, v in rows], tablefmt="plain", disable_numparse=True)


def template_info_json(template: model.ResolvedTemplate) -> dict[str, Any]:
    return {"template": dataclasses.asdict(template)}


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


# --- host power (mclu on / mclu off) ---------------------------------------------------------


def wake_sent_text(spec: model.HostSpec) -> str:
    return (
        f"{spec.name}: wake-on-LAN packet for {spec.mac} sent to {spec.wol_address}:{spec.wol_port}"
    )


def power_on_text(spec: model.HostSpec, waited: power.Waited | None) -> str:
    if waited is None:
        return wake_sent_text(spec) + " (mclu on --wait waits until it answers)"
    return f"{spec.name}: on, answering ssh after {waited.seconds:.1f} s"


def power_on_json(spec: model.HostSpec, waited: power.Waited | None) -> dict[str, Any]:
    return {
        "host": spec.name,
        "action": "on",
        "mac": spec.mac,
        "sent_to": f"{spec.wol_address}:{spec.wol_port}",
        **_waited_json(waited),
    }


def power_off_sent_text(spec: model.HostSpec, ended: power.Ended) -> str:
    how = (
        "the command ran"
        if ended is power.Ended.COMPLETED
        else "the connection dropped as it went down"
    )
    return f"{spec.name}: `{' '.join(spec.power_off_command)}` sent; {how}"


def power_off_text(
    spec: model.HostSpec, ended: power.Ended, killed: Sequence[str], waited: power.Waited | None
) -> str:
    lines = []
    if killed:
        lines.append(
            f"{spec.name}: powered off with {len(killed)} running "
            f"{'guest' if len(killed) == 1 else 'guests'} (--force): {', '.join(killed)}"
        )
    if waited is None:
        lines.append(power_off_sent_text(spec, ended) + " (mclu off --wait waits until it is off)")
    else:
        lines.append(f"{spec.name}: off, no longer answering after {waited.seconds:.1f} s")
    return "\n".join(lines)


def power_off_json(
    spec: model.HostSpec, ended: power.Ended, killed: Sequence[str], waited: power.Waited | None
) -> dict[str, Any]:
    return {
        "host": spec.name,
        "action": "off",
        "command": list(spec.power_off_command),
        "ended": ended.value,
        "guests_killed": list(killed),
        **_waited_json(waited),
    }


def _waited_json(waited: power.Waited | None) -> dict[str, Any]:
    if waited is None:
        return {"waited": False}
    return {"waited": True, "attempts": waited.attempts, "seconds": round(waited.seconds, 3)}


def wait_attempt_text(spec: model.HostSpec, attempt: power.Attempt) -> str:
    return f"{spec.name}: attempt {attempt.number} ({attempt.elapsed:.0f} s): {attempt.answer}"
