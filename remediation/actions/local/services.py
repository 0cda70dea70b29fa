"""Configured services: ``service.set_log_level`` and ``service.restart``.

Only services listed in ``GRACE_SERVICES_FILE`` can be touched (a JSON object;
a missing file means no services)::

    {"orders-api": {"kind": "pidfile", "argv": ["/usr/bin/python3", "/srv/orders/app.py"],
                    "pidfile": "/srv/managed/orders/app.pid", "restart": "spawn",
                    "config_path": "/srv/managed/orders/app.ini", "log_level_pattern": "^level\\\\s*=\\\\s*(\\\\w+)"},
     "nginx": {"kind": "systemd", "unit": "nginx.service"}}

A pidfile service is signalled only after the pid's command line has been checked
against the configured argv (psutil), so a stale pidfile never gets another process
killed. ``restart: "supervisor"`` (default) waits for the supervisor to bring a new
process up; ``restart: "spawn"`` starts the argv itself (argv list, new session) and
writes the pidfile. Commands are argv lists, never shell strings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from django.conf import settings
from rest_framework import serializers
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

from remediation.actions.base import Action, ActionError, ActionRefused, ActionUnavailable, registry
from remediation.actions.local.paths import Confined, confine, read_file_nofollow, write_file_atomic

CONFIG_SNAPSHOT = "config"
_UNIT = re.compile(r"^[A-Za-z0-9@_.:\\-]+$")
# Children this process started; polled so an exited one does not stay a zombie.
_spawned: list[subprocess.Popen] = []


@dataclass(frozen=True)
class Service:
    name: str
    kind: str
    unit: str = ""
    argv: tuple[str, ...] = ()
    pidfile: str = ""
    restart: str = "supervisor"
    cwd: str = "/"
    env: dict | None = None  # the spawned command's environment besides PATH (GRACE's own is not passed on)
    config_path: str = ""
    log_level_pattern: str = ""
    stop_timeout: float = 10.0
    start_timeout: float = 30.0


def _invalid(name: str, why: str) -> ActionUnavailable:
    return ActionUnavailable(f"GRACE_SERVICES_FILE {settings.GRACE_SERVICES_FILE}: service {name!r}: {why}")


def _parse(name: str, raw: object) -> Service:
    if not isinstance(raw, dict):
        raise _invalid(name, "must be an object")
    known = set(Service.__dataclass_fields__) - {"name"}
    if unknown := set(raw) - known:
        raise _invalid(name, f"unknown keys {sorted(unknown)}")
    kind = raw.get("kind")
    if kind == "systemd":
        unit = raw.get("unit")
        if not isinstance(unit, str) or not _UNIT.match(unit) or unit.startswith("-"):
            raise _invalid(name, "a systemd service needs a valid 'unit'")
    elif kind == "pidfile":
        argv = raw.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise _invalid(name, "a pidfile service needs 'argv', a non-empty list of strings")
        if not isinstance(raw.get("pidfile"), str) or not raw["pidfile"].startswith("/"):
            raise _invalid(name, "a pidfile service needs an absolute 'pidfile'")
        if raw.get("restart", "supervisor") not in ("supervisor", "spawn"):
            raise _invalid(name, "'restart' must be 'supervisor' or 'spawn'")
        env = raw.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise _invalid(name, "'env' must be an object of strings")
    else:
        raise _invalid(name, "'kind' must be 'pidfile' or 'systemd'")
    pattern = raw.get("log_level_pattern", "")
    if pattern:
        try:
            groups = re.compile(pattern, re.MULTILINE).groups
        except re.error as exc:
            raise _invalid(name, f"'log_level_pattern' is not a valid regex: {exc}") from None
        if groups != 1:
            raise _invalid(name, "'log_level_pattern' must have exactly one group")
    try:
        return Service(name=name, **{**raw, "argv": tuple(raw.get("argv", ()))})
    except TypeError as exc:
        raise _invalid(name, str(exc)) from None


def services() -> dict[str, Service]:
    path = Path(settings.GRACE_SERVICES_FILE)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ActionUnavailable(f"GRACE_SERVICES_FILE {path}: cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ActionUnavailable(f"GRACE_SERVICES_FILE {path}: must be a JSON object of name -> service")
    return {name: _parse(name, raw) for name, raw in data.items()}


def service(name: str) -> Service:
    configured = services()
    if name not in configured:
        raise ActionRefused(f"service {name!r} is not in the allow-list (GRACE_SERVICES_FILE)")
    return configured[name]


class ServiceParams(serializers.Serializer):
    service = serializers.RegexField(r"^[A-Za-z0-9_.@-]{1,100}$", help_text="A name from GRACE_SERVICES_FILE.")


class LogLevelParams(ServiceParams):
    level = serializers.RegexField(r"^[A-Za-z]{1,20}$", help_text="The new level, written as given (e.g. DEBUG).")


class RestartParams(ServiceParams):
    pass


# --- log level ------------------------------------------------------------------


def _config(svc: Service) -> tuple[Confined, re.Pattern]:
    if not svc.config_path or not svc.log_level_pattern:
        raise ActionRefused(f"service {svc.name!r} has no config_path and log_level_pattern configured")
    return confine(svc.config_path), re.compile(svc.log_level_pattern, re.MULTILINE)


def _current_level(svc: Service) -> str | None:
    if not svc.config_path or not svc.log_level_pattern:
        return None
    target, pattern = _config(svc)
    match = pattern.search(read_file_nofollow(target).decode("utf-8", errors="surrogateescape"))
    return match.group(1) if match else None


def set_log_level(params: dict) -> dict:
    svc = service(params["service"])
    target, pattern = _config(svc)
    text = read_file_nofollow(target).decode("utf-8", errors="surrogateescape")
    match = pattern.search(text)
    if not match:
        raise ActionError(f"{target.path}: log_level_pattern of {svc.name!r} matches nothing")
    before = match.group(1)
    if before == params["level"]:
        return {"changed": False, "log_level": before}
    start, end = match.span(1)
    write_file_atomic(target, (text[:start] + params["level"] + text[end:]).encode("utf-8", errors="surrogateescape"))
    return {"changed": True, "previous": before, "log_level": params["level"]}


def snapshot_config(params: dict, directory: Path) -> dict:
    svc = service(params["service"])
    target, _ = _config(svc)
    (Path(directory) / CONFIG_SNAPSHOT).write_bytes(read_file_nofollow(target))
    return {"config_path": str(target.path), "file": CONFIG_SNAPSHOT, "log_level": _current_level(svc)}


def rollback_config(params: dict, state: dict, directory: Path) -> dict:
    svc = service(params["service"])
    target, _ = _config(svc)
    if state.get("config_path") != str(target.path):
        raise ActionRefused(f"snapshot is of {state.get('config_path')!r}, not of {target.path}")
    write_file_atomic(target, (Path(directory) / state.get("file", CONFIG_SNAPSHOT)).read_bytes())
    return {"restored": str(target.path), "log_level": _current_level(svc)}


# --- processes --------------------------------------------------------------------


def _reap() -> None:
    _spawned[:] = [proc for proc in _spawned if proc.poll() is None]


def _pidfile(svc: Service) -> Confined:
    return confine(svc.pidfile, must_exist=False)


def _process(svc: Service) -> psutil.Process | None:
    """The running process named by the pidfile, only if its command line is the configured argv."""
    _reap()
    target = _pidfile(svc)
    if not target.exists:
        return None
    try:
        pid = int(read_file_nofollow(target).split()[0])
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or tuple(proc.cmdline()) != svc.argv:
            return None
        return proc
    except (ValueError, IndexError, psutil.NoSuchProcess):
        return None
    except psutil.AccessDenied:
        # Neither "not running" (a second copy would be started) nor "ours" (it would be signalled).
        raise ActionRefused(f"service {svc.name!r}: cannot read the command line of pid {pid}; nothing was signalled")


def _systemd(svc: Service, *args: str) -> subprocess.CompletedProcess:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise ActionUnavailable("systemd: systemctl is not installed on this host")
    argv = [systemctl, *args, "--", svc.unit]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=svc.start_timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ActionError(f"systemd: {' '.join(argv)} timed out after {svc.start_timeout} s") from exc
    if done.returncode != 0 and "System has not been booted with systemd" in done.stderr:
        raise ActionUnavailable(f"systemd: not running on this host ({done.stderr.strip()})")
    return done


def _systemd_facts(svc: Service) -> dict:
    done = _systemd(svc, "show", "--property=ActiveState,MainPID")
    props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    pid = int(props.get("MainPID") or 0) or None
    started = None
    if pid:
        try:
            started = datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC).isoformat()
        except psutil.NoSuchProcess:
            pid = None
    return {"running": props.get("ActiveState") == "active", "pid": pid, "started_at": started}


def observe(params: dict) -> dict:
    svc = service(params["service"])
    facts: dict = {"service": svc.name, "kind": svc.kind, "log_level": _current_level(svc)}
    if svc.kind == "systemd":
        return facts | _systemd_facts(svc)
    proc = _process(svc)
    started = datetime.fromtimestamp(proc.create_time(), UTC).isoformat() if proc else None
    return facts | {"running": proc is not None, "pid": proc.pid if proc else None, "started_at": started}


def _wait_for(predicate, timeout: float):
    """Poll ``predicate`` with backoff until it returns something truthy or the time is up (then None)."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
        retry=retry_if_result(lambda value: not value),
    )
    try:
        return retrying(predicate)
    except RetryError:
        return None


def _stop(proc: psutil.Process, svc: Service) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs([proc], timeout=svc.stop_timeout)
        if alive:
            proc.kill()
            psutil.wait_procs([proc], timeout=5)
    except psutil.NoSuchProcess:
        pass
    _reap()


def _spawn(svc: Service) -> int:
    try:
        proc = subprocess.Popen(
            list(svc.argv),
            cwd=svc.cwd,
            env={"PATH": os.environ.get("PATH", os.defpath), **(svc.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise ActionError(f"service {svc.name!r}: cannot start {svc.argv[0]}: {exc}") from exc
    _spawned.append(proc)
    write_file_atomic(_pidfile(svc), f"{proc.pid}\n".encode())
    return proc.pid


def restart(params: dict) -> dict:
    svc = service(params["service"])
    if svc.kind == "systemd":
        done = _systemd(svc, "restart")
        if done.returncode != 0:
            raise ActionError(f"systemd: restart of {svc.unit} failed: {done.stderr.strip() or done.returncode}")
        return {"restarted": svc.unit} | _systemd_facts(svc)
    old = _process(svc)
    old_pid = old.pid if old else None
    if old:
        _stop(old, svc)
    if svc.restart == "spawn":
        _spawn(svc)

    def replacement() -> psutil.Process | None:
        proc = _process(svc)
        return proc if proc is not None and proc.pid != old_pid else None

    new = _wait_for(replacement, svc.start_timeout)
    if not new:
        raise ActionError(f"service {svc.name!r}: no new process matching its argv within {svc.start_timeout} s")
    return {
        "previous_pid": old_pid,
        "pid": new.pid,
        "started_at": datetime.fromtimestamp(new.create_time(), UTC).isoformat(),
    }


registry.register(
    Action(
        name="service.set_log_level",
        family="local",
        params=LogLevelParams,
        observe=observe,
        execute=set_log_level,
        snapshot=snapshot_config,
        rollback=rollback_config,
        tier=1,
        idempotent=True,
        timeout=30,
        target_param="service",
        resource_kind="service",
        binds={"service": "target"},
        description="Set the log level in a configured service's config file (rollback restores the file).",
        default_contract=[{"field": "log_level", "op": "==", "value": "{params.level}"}],
    )
)
registry.register(
    Action(
        name="service.restart",
        family="local",
        params=RestartParams,
        observe=observe,
        execute=restart,
        tier=1,
        idempotent=False,
        timeout=120,
        target_param="service",
        resource_kind="service",
        binds={"service": "target"},
        description="Restart a service from the allow-list (systemd unit or pidfile-supervised command).",
        default_contract=[{"field": "running", "op": "==", "value": True, "within": 30}],
    )
)
