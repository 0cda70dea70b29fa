"""Evidence: read-only facts gathered into an escalation, for the person who takes over.

An escalate-only playbook acts on nothing; its steps are evidence steps (``{"evidence": "host.top_processes",
"params": {"sort_by": "cpu"}}``). When a run is handed to humans with such a playbook, each step's collector is
run once, bounded in time and size, and what it found is written on the run's ESCALATED timeline entry (shown on
the run page) with a one-line summary in the escalation's reason and notification.

Collectors read and change nothing. What they read is bound the way an action's target is: the host the worker
runs on (said so, with the service's declared hosts, when the service lives elsewhere), the inventory resources
of the incident's service (never a path or URL from the alert), and GRACE's own benchmark history. A collector
that cannot read what it needs reports why instead of failing the escalation.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from rest_framework import serializers

from grace_site.masking import redact_text
from incidents import inventory
from incidents.models import Incident, Service
from learning import benchmarks
from remediation.actions import registry
from remediation.actions.base import ActionError

# Filesystems that are not disks: left out of the disk usage evidence.
_PSEUDO_FS = {
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "nsfs",
    "securityfs",
    "pstore",
    "bpf",
    "tracefs",
    "debugfs",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "fusectl",
    "configfs",
    "binfmt_misc",
    "ramfs",
    "efivarfs",
    "rpc_pipefs",
}
COMMAND_CHARS = 160


@dataclass(frozen=True)
class Context:
    """What a collector may read: the incident, its inventory service, and the resource its step binds."""

    incident: Incident
    service: Service | None
    resource: object | None = None


@dataclass(frozen=True)
class Collector:
    name: str
    description: str
    params: type[serializers.Serializer]
    gather: Callable[[Context, dict], dict]  # -> {"summary": str, ...facts}
    resource_kind: str = ""  # the inventory resource of the incident's service it reads, if any
    labels: tuple[str, ...] = ()  # labels of the incident it reads (to select, never to define)

    def validate(self, params: dict) -> dict:
        serializer = self.params(data=params or {})
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


COLLECTORS: dict[str, Collector] = {}


def register(collector: Collector) -> Collector:
    COLLECTORS[collector.name] = collector
    return collector


# --- the host ------------------------------------------------------------------------------------------------


def _host_note(context: Context) -> dict:
    host = socket.gethostname()
    note = {"gathered_on": host}
    hosts = list(context.service.hosts or []) if context.service is not None else []
    if hosts and host not in hosts:
        note["warning"] = (
            f"service {context.service.name} runs on {', '.join(hosts)}; these facts are from {host}, "
            "where the worker that escalated runs"
        )
    return note


class TopProcessesParams(serializers.Serializer):
    sort_by = serializers.ChoiceField(choices=["cpu", "memory"], default="cpu")
    limit = serializers.IntegerField(min_value=1, max_value=25, default=10)
    sample_seconds = serializers.FloatField(min_value=0.1, max_value=2.0, default=0.5)


def _processes(sample_seconds: float) -> list[dict]:
    procs = list(psutil.process_iter(["pid", "name", "username", "memory_percent", "memory_info", "cmdline"]))
    for proc in procs:
        try:
            proc.cpu_percent(None)  # the first call starts the measurement
        except psutil.Error:
            continue
    time.sleep(sample_seconds)
    rows = []
    for proc in procs:
        try:
            cpu = proc.cpu_percent(None)
        except psutil.Error:
            continue  # it ended meanwhile, or is not ours to read
        info = proc.info
        command = " ".join(info.get("cmdline") or []) or info.get("name") or ""
        rss = info["memory_info"].rss if info.get("memory_info") else 0
        rows.append(
            {
                "pid": info["pid"],
                "name": info.get("name") or "",
                "user": info.get("username") or "",
                "cpu_percent": round(cpu, 1),
                "memory_percent": round(info.get("memory_percent") or 0.0, 1),
                "rss_mib": round(rss / 1048576, 1),
                # Command lines can carry credentials: masked, and cut short.
                "command": redact_text(command)[:COMMAND_CHARS],
            }
        )
    return rows


def top_processes(context: Context, params: dict) -> dict:
    key = "cpu_percent" if params["sort_by"] == "cpu" else "memory_percent"
    rows = sorted(_processes(params["sample_seconds"]), key=lambda r: (-r[key], r["pid"]))[: params["limit"]]
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    facts = {
        **_host_note(context),
        "cpu_count": psutil.cpu_count() or 1,
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load_per_cpu": round(os.getloadavg()[0] / (psutil.cpu_count() or 1), 2),
        "memory_percent": memory.percent,
        "swap_percent": swap.percent,
        "sorted_by": params["sort_by"],
        "processes": rows,
    }
    unit = "% CPU" if params["sort_by"] == "cpu" else "% memory"
    top = ", ".join(f"{r['name']} (pid {r['pid']}) {r[key]:g}{unit}" for r in rows[:3]) or "no process readable"
    facts["summary"] = f"top processes by {params['sort_by']} on {facts['gathered_on']}: {top}"
    return facts


register(
    Collector(
        name="host.top_processes",
        description="The busiest processes of the host (CPU measured over a short sample, or resident memory), "
        "with CPU, memory, load and swap of the host.",
        params=TopProcessesParams,
        gather=top_processes,
    )
)


class DiskUsageParams(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=50, default=10)


def disk_usage(context: Context, params: dict) -> dict:
    mounts, seen = [], set()
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _PSEUDO_FS or part.device in seen:
            continue
        seen.add(part.device)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        mounts.append(
            {
                "mount": part.mountpoint,
                "fstype": part.fstype,
                "used_percent": usage.percent,
                "free_gib": round(usage.free / 1024**3, 2),
                "total_gib": round(usage.total / 1024**3, 2),
            }
        )
    mounts.sort(key=lambda m: -m["used_percent"])
    caches = []
    if context.service is not None:
        clear = registry.get("cache.clear")
        for resource in context.service.resources.filter(kind="cache").order_by("name"):
            try:
                facts = clear.observe({"path": resource.target})
                caches.append({"resource": resource.name, "path": resource.target, "bytes": facts.get("bytes")})
            except (ActionError, OSError) as exc:
                caches.append({"resource": resource.name, "path": resource.target, "error": str(exc)[:300]})
    facts = {**_host_note(context), "mounts": mounts[: params["limit"]], "caches": caches}
    fullest = ", ".join(f"{m['mount']} {m['used_percent']:g}% used ({m['free_gib']:g} GiB free)" for m in mounts[:2])
    declared = (
        f"; declared caches: {', '.join(c['resource'] for c in caches)}"
        if caches
        else "; the service declares no cache resource GRACE could clear"
    )
    facts["summary"] = f"disks on {facts['gathered_on']}: {fullest or 'none readable'}{declared}"
    return facts


register(
    Collector(
        name="host.disk_usage",
        description="Usage of the host's disks, fullest first, and the size of the service's declared caches.",
        params=DiskUsageParams,
        gather=disk_usage,
    )
)


# --- the inventory's resources -------------------------------------------------------------------------------


class HttpLatencyParams(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=10, default=5)


def http_latency(context: Context, params: dict) -> dict:
    probe = registry.get("http.probe")
    bound = probe.validate(probe.bind({"target": context.resource.target, "scope": {}}))
    samples = [probe.observe(bound) for _ in range(params["count"])]
    latencies = sorted(s["latency_ms"] for s in samples)
    statuses = sorted({str(s["status"]) for s in samples})
    facts = {
        "resource": context.resource.name,
        "url": bound["url"],
        "samples": samples,
        "latency_ms": {"min": latencies[0], "median": latencies[len(latencies) // 2], "max": latencies[-1]},
        "statuses": statuses,
    }
    facts["summary"] = (
        f"{bound['url']} now: median {facts['latency_ms']['median']:g} ms over {len(samples)} requests "
        f"(max {latencies[-1]:g} ms), status {', '.join(statuses)}"
    )
    return facts


register(
    Collector(
        name="http.latency",
        description="Probe the service's HTTP resource a few times: status and latency now.",
        params=HttpLatencyParams,
        gather=http_latency,
        resource_kind="http",
    )
)


# --- GRACE's own benchmarks ----------------------------------------------------------------------------------


class BenchmarkHistoryParams(serializers.Serializer):
    runs = serializers.IntegerField(min_value=5, max_value=100, default=30)


def benchmark_history(context: Context, params: dict) -> dict:
    labels = context.incident.labels or {}
    suite, metric = labels.get("suite", ""), labels.get("metric", "")
    rows = benchmarks.history(suite, metric, limit=params["runs"])
    if not rows:
        return {
            "suite": suite,
            "metric": metric,
            "results": [],
            "summary": f"no benchmark history for suite {suite!r}, metric {metric!r}",
        }
    over = sum(1 for r in rows if r["over_threshold"])
    latest = rows[0]
    facts = {"suite": suite, "metric": metric, "unit": latest["unit"], "results": rows}
    facts["summary"] = (
        f"{suite} {metric}: latest {latest['value']:.3g} {latest['unit']} against a baseline of "
        f"{latest['baseline']:.3g} (threshold {latest['threshold']:.3g}); over the threshold in {over} of the last "
        f"{len(rows)} runs"
        if latest["baseline"] is not None and latest["value"] is not None
        else f"{suite} {metric}: {len(rows)} runs, {over} over the threshold"
    )
    return facts


register(
    Collector(
        name="benchmark.history",
        description="The regressed metric's recent benchmark results with the baseline and threshold of each "
        "(the suite and metric named by the regression incident's labels).",
        params=BenchmarkHistoryParams,
        gather=benchmark_history,
        labels=("suite", "metric"),
    )
)


# --- gathering ----------------------------------------------------------------------------------------------


def gather(steps: list[dict], incident: Incident) -> list[dict]:
    """Run each evidence step for ``incident``: ``[{"evidence", "description", "summary", "facts" | "error"}]``."""
    service = inventory.service_named(incident.service)
    found = []
    for index, step in enumerate(steps or []):
        name = step.get("evidence", "") if isinstance(step, dict) else ""
        collector = COLLECTORS.get(name)
        entry: dict = {"step": index, "evidence": name}
        if collector is None:
            found.append({**entry, "error": f"unknown evidence {name!r}"})
            continue
        entry["description"] = collector.description
        started = time.perf_counter()
        try:
            params = collector.validate(step.get("params") or {})
            resource = None
            if collector.resource_kind:
                if service is None:
                    raise inventory.NotInInventory(
                        f"service {incident.service or '(none)'!r} is not in the inventory: "
                        f"no {collector.resource_kind} resource to read"
                    )
                label = step.get("resource_label", "resource")
                resource = inventory.select(service, collector.resource_kind, labels=incident.labels or {}, label=label)
            facts = collector.gather(Context(incident, service, resource), params)
        except (inventory.NotInInventory, serializers.ValidationError, ActionError, OSError, psutil.Error) as exc:
            detail = exc.detail if isinstance(exc, serializers.ValidationError) else exc
            found.append({**entry, "error": f"could not gather {name}: {detail}"})
            continue
        summary = facts.pop("summary", "")
        found.append({**entry, "summary": summary, "facts": facts, "seconds": round(time.perf_counter() - started, 3)})
    return found


def summary(evidence: list[dict]) -> str:
    return "; ".join(e.get("summary") or e.get("error", "") for e in evidence if e.get("summary") or e.get("error"))
