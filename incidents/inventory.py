"""The service inventory: which services exist, where they run, and the resources GRACE may act on.

Targets come from here, never from an alert: a playbook step binds its action to a resource of the
incident's service, and a label can only pick one of that service's resources by name. Every write is
audited. ``apply_catalogue`` loads a declarative YAML catalogue (``manage.py grace_inventory apply``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction

from approvals import audit
from incidents.choices import RESOURCE_SCOPE, RESOURCE_SCOPE_REQUIRED, ResourceKind
from incidents.models import Resource, Service
from incidents.validators import HOST_RE, NAME_RE

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# The shape of each kind's target, and of each scope key (what the actions accept, checked earlier).
TARGET_PATTERNS: dict[str, tuple[str, str]] = {
    ResourceKind.SERVICE: (r"^[A-Za-z0-9_.@-]{1,100}$", "a service name from GRACE_SERVICES_FILE"),
    ResourceKind.POSTGRES: (r"^[A-Za-z0-9_.-]{1,100}$", "a target name from GRACE_POSTGRES_TARGETS"),
    ResourceKind.DOCKER_CONTAINER: (r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", "a container name"),
    ResourceKind.DOCKER_SERVICE: (r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", "a Compose service name"),
    ResourceKind.K8S_DEPLOYMENT: (DNS_SUBDOMAIN, "a deployment name (DNS subdomain)"),
    ResourceKind.AWS_ASG: (r"^[\x21-\x7e][\x20-\x7e]{0,254}$", "an Auto Scaling group name"),
    ResourceKind.AWS_EC2: (r"^i-[0-9a-f]{8,17}$", "an instance id (i-...)"),
    ResourceKind.AWS_RDS: (r"^[A-Za-z][A-Za-z0-9-]{0,62}$", "a DB instance identifier"),
}
SCOPE_PATTERNS: dict[str, tuple[str, str]] = {
    "engine": (NAME_RE, "a Docker engine name from GRACE_DOCKER_HOSTS"),
    "project": (r"^[a-z0-9][a-z0-9_-]{0,62}$", "a Compose project name"),
    "context": (r"^[\x21-\x7e]{1,200}$", "a kubeconfig context name"),
    "namespace": (DNS_LABEL, "a namespace (DNS label)"),
    "account": (NAME_RE, "an account name from GRACE_AWS_ACCOUNTS"),
    "region": (r"^[a-z]{2}(-[a-z]+)+-\d$", "an AWS region such as eu-west-1"),
}


def clean_path(raw: str) -> str:
    """An absolute, normalized path (no '..', no NUL); ValueError saying why not."""
    if "\x00" in raw:
        raise ValueError("must not contain NUL bytes")
    if not os.path.isabs(raw):
        raise ValueError("must be an absolute path")
    if ".." in raw.split("/"):
        raise ValueError("must not contain '..'")
    normalized = os.path.normpath(raw)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if normalized == "/":
        raise ValueError("must not be the root directory")
    return normalized


def clean_url(raw: str) -> str:
    if any(ch.isspace() or ch == "\\" or ord(ch) < 32 for ch in raw):
        raise ValueError("must not contain spaces, backslashes or control characters")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return raw


def _clean_target(kind: str, target: Any) -> str:
    if not isinstance(target, str) or not target:
        raise ValueError("is required")
    if kind in (ResourceKind.SQLITE, ResourceKind.CACHE):
        return clean_path(target)
    if kind == ResourceKind.HTTP:
        return clean_url(target)
    pattern, what = TARGET_PATTERNS[kind]
    if not re.fullmatch(pattern, target):
        raise ValueError(f"must be {what}")
    return target


def _clean_scope(kind: str, scope: Any) -> dict[str, str]:
    if not isinstance(scope, dict):
        raise ValidationError({"scope": "must be an object"})
    allowed = RESOURCE_SCOPE.get(kind, ())
    unknown = sorted(set(scope) - set(allowed))
    if unknown:
        shown = ", ".join(allowed) or "none"
        raise ValidationError({"scope": f"{kind} takes no {', '.join(unknown)} (it takes: {shown})"})
    cleaned = {}
    for key in allowed:
        value = scope.get(key, "")
        if value in ("", None):
            if key in RESOURCE_SCOPE_REQUIRED.get(kind, ()):
                raise ValidationError({"scope": f"{key} is required for {kind}"})
            continue
        pattern, what = SCOPE_PATTERNS[key]
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise ValidationError({"scope": f"{key} must be {what}"})
        cleaned[key] = value
    return cleaned


def clean_resource(resource: Resource) -> None:
    """Validate and normalize a resource in place; ValidationError naming the field."""
    if resource.kind not in ResourceKind.values:
        raise ValidationError({"kind": f"must be one of {', '.join(ResourceKind.values)}"})
    try:
        resource.target = _clean_target(resource.kind, resource.target)
    except ValueError as exc:
        raise ValidationError({"target": f"{exc}"}) from None
    resource.scope = _clean_scope(resource.kind, resource.scope or {})
    try:
        service = resource.service  # may be an unsaved Service while a catalogue is checked
    except ObjectDoesNotExist:
        service = None
    hosts = list(service.hosts or []) if service is not None else []
    if resource.kind in ResourceKind.LOCAL:
        if not resource.host and len(hosts) == 1:
            resource.host = hosts[0]
        if resource.host and hosts and resource.host not in hosts:
            raise ValidationError({"host": f"{resource.host!r} is not one of the service's hosts ({', '.join(hosts)})"})
        if not resource.host and len(hosts) > 1:
            raise ValidationError({"host": f"the service runs on {len(hosts)} hosts: name the one this is on"})
    elif resource.host:
        raise ValidationError({"host": f"a {resource.kind} resource is not on a host of the service; leave it blank"})
    if resource.host and not re.fullmatch(HOST_RE, resource.host):
        raise ValidationError({"host": "is not a host name"})


def locator(resource: Resource) -> str:
    """The resource's canonical identity: kind, scope and target (what runs, breakers and budgets key on)."""
    parts = [resource.scope.get(key, "") for key in RESOURCE_SCOPE.get(resource.kind, ())]
    return f"{resource.kind}:{'/'.join([*[p for p in parts if p], resource.target])}"


# --- selection --------------------------------------------------------------------------------------------


class NotInInventory(Exception):
    """No resource can be bound: the run is escalated with this reason and executes nothing."""


def service_named(name: str) -> Service | None:
    return Service.objects.filter(name=name).first() if name else None


def select(service: Service, kind: str, *, labels: dict, label: str) -> Resource:
    """The one resource of ``kind`` of ``service`` that the incident selects.

    A label may only choose among the service's own resources of that kind, by resource name; without the
    label, a service with exactly one resource of the kind gets that one. Anything else raises NotInInventory.
    """
    candidates = list(service.resources.filter(kind=kind).order_by("name"))
    chosen = labels.get(label) if label else None
    if chosen is not None:
        for resource in candidates:
            if resource.name == chosen:
                return resource
        names = ", ".join(r.name for r in candidates) or "none"
        raise NotInInventory(
            f"label {label}={chosen!r} names no {kind} resource of service {service.name} (it has: {names})"
        )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise NotInInventory(f"service {service.name} has no {kind} resource in the inventory")
    names = ", ".join(r.name for r in candidates)
    raise NotInInventory(
        f"service {service.name} has {len(candidates)} {kind} resources ({names}); "
        f"the alert must name one with the label {label!r}"
    )


# --- writes (admin, API and catalogue all come through here) ----------------------------------------------

SERVICE_FIELDS = ("owner", "environment", "tier_floor", "hosts", "description")
RESOURCE_FIELDS = ("kind", "target", "scope", "host", "description")


def service_data(service: Service) -> dict:
    return {"name": service.name, **{f: getattr(service, f) for f in SERVICE_FIELDS}}


def resource_data(resource: Resource) -> dict:
    return {
        "service": resource.service.name,
        "name": resource.name,
        **{f: getattr(resource, f) for f in RESOURCE_FIELDS},
    }


def _changes(before: dict | None, after: dict) -> dict:
    if before is None:
        return {"after": after}
    return {k: {"before": before.get(k), "after": v} for k, v in after.items() if before.get(k) != v}


def save_service(service: Service, *, actor=None) -> Service:
    """Create or update a service (validated, audited with before and after)."""
    before = None
    if service.pk:
        old = Service.objects.filter(pk=service.pk).first()
        before = service_data(old) if old else None
    service.full_clean()
    with transaction.atomic():
        service.save()
        audit.record(
            "inventory.service_saved" if before else "inventory.service_created",
            actor=actor,
            obj=service,
            data={"name": service.name, "changes": _changes(before, service_data(service))},
        )
        if before:
            # A host taken away from the service must not be left on its resources.
            for resource in service.resources.all():
                clean_resource(resource)
    return service


def save_resource(resource: Resource, *, actor=None) -> Resource:
    before = None
    if resource.pk:
        old = Resource.objects.select_related("service").filter(pk=resource.pk).first()
        before = resource_data(old) if old else None
    resource.full_clean()
    with transaction.atomic():
        resource.save()
        audit.record(
            "inventory.resource_saved" if before else "inventory.resource_created",
            actor=actor,
            obj=resource,
            data={
                "service": resource.service.name,
                "name": resource.name,
                "changes": _changes(before, resource_data(resource)),
            },
        )
    return resource


def delete_service(service: Service, *, actor=None) -> None:
    with transaction.atomic():
        audit.record(
            "inventory.service_deleted",
            actor=actor,
            obj=service,
            data={"before": service_data(service), "resources": [resource_data(r) for r in service.resources.all()]},
        )
        service.delete()


def delete_resource(resource: Resource, *, actor=None) -> None:
    with transaction.atomic():
        audit.record("inventory.resource_deleted", actor=actor, obj=resource, data={"before": resource_data(resource)})
        resource.delete()


# --- the declarative catalogue -----------------------------------------------------------------------------


class CatalogueError(Exception):
    """The catalogue is invalid; ``errors`` name the entry and field of each problem. Nothing was changed."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


SERVICE_KEYS = {"name", "resources", *SERVICE_FIELDS}
RESOURCE_KEYS = {
    "name",
    "kind",
    "target",
    "host",
    "description",
    *{k for keys in RESOURCE_SCOPE.values() for k in keys},
}


@dataclass
class _Entry:
    where: str
    service: Service
    resources: list[tuple[str, Resource]]


def _messages(exc: ValidationError) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(name, " ".join(str(m) for m in errors)) for name, errors in exc.message_dict.items()]
    return [("", " ".join(exc.messages))]


def _parse(document: Any) -> list[_Entry]:
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise CatalogueError(["the catalogue must be a mapping with a 'services' list"])
    unknown = sorted(set(document) - {"services", "apiVersion", "kind"})
    if unknown:
        raise CatalogueError([f"unknown top-level key(s): {', '.join(unknown)}"])
    errors: list[str] = []
    entries: list[_Entry] = []
    seen: set[str] = set()
    for i, raw in enumerate(document["services"]):
        where = f"services[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: must be a mapping")
            continue
        name = raw.get("name")
        where = f"services[{i}] ({name})" if isinstance(name, str) else where
        for key in sorted(set(raw) - SERVICE_KEYS):
            errors.append(f"{where}.{key}: unknown field (allowed: {', '.join(sorted(SERVICE_KEYS))})")
        if isinstance(name, str) and name in seen:
            errors.append(f"{where}.name: {name!r} is listed twice")
        seen.add(name if isinstance(name, str) else "")
        service = Service(name=name or "", **{f: raw[f] for f in SERVICE_FIELDS if f in raw})
        try:
            service.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            errors.extend(f"{where}.{field}: {message}" for field, message in _messages(exc))
        resources: list[tuple[str, Resource]] = []
        raw_resources = raw.get("resources", [])
        if not isinstance(raw_resources, list):
            errors.append(f"{where}.resources: must be a list")
            raw_resources = []
        names: set[str] = set()
        for j, item in enumerate(raw_resources):
            rwhere = f"{where}.resources[{j}]"
            if not isinstance(item, dict):
                errors.append(f"{rwhere}: must be a mapping")
                continue
            rname = item.get("name")
            rwhere = f"{where}.resources[{j}] ({rname})" if isinstance(rname, str) else rwhere
            for key in sorted(set(item) - RESOURCE_KEYS):
                errors.append(f"{rwhere}.{key}: unknown field")
            if isinstance(rname, str) and rname in names:
                errors.append(f"{rwhere}.name: {rname!r} is listed twice in this service")
            names.add(rname if isinstance(rname, str) else "")
            scope_keys = {k for keys in RESOURCE_SCOPE.values() for k in keys}
            resource = Resource(
                service=service,
                name=rname or "",
                kind=item.get("kind", ""),
                target=item.get("target", ""),
                host=item.get("host", ""),
                description=item.get("description", ""),
                scope={k: v for k, v in item.items() if k in scope_keys},
            )
            try:
                resource.full_clean(exclude=["service"], validate_unique=False, validate_constraints=False)
            except ValidationError as exc:
                errors.extend(f"{rwhere}.{f}: {message}" for f, message in _messages(exc))
            resources.append((rwhere, resource))
        entries.append(_Entry(where, service, resources))
    if errors:
        raise CatalogueError(errors)
    return entries


def apply_catalogue(document: Any, *, prune: bool = False, dry_run: bool = False, actor=None) -> ApplyReport:
    """Make the inventory match the catalogue: every entry validated first, then one transaction.

    Idempotent: applying the same catalogue again changes nothing. With ``prune``, services (and resources of
    listed services) missing from the catalogue are deleted. ``dry_run`` reports and changes nothing.
    """
    entries = _parse(document)
    report = ApplyReport()
    with transaction.atomic():
        listed = set()
        for entry in entries:
            listed.add(entry.service.name)
            existing = Service.objects.filter(name=entry.service.name).first()
            service = existing or Service(name=entry.service.name)
            wanted = {f: getattr(entry.service, f) for f in SERVICE_FIELDS}
            if existing is None or any(getattr(existing, f) != v for f, v in wanted.items()):
                for f, v in wanted.items():
                    setattr(service, f, v)
                (report.updated if existing else report.created).append(f"service {service.name}")
                if not dry_run:
                    save_service(service, actor=actor)
            else:
                report.unchanged += 1
            kept = set()
            for _, item in entry.resources:
                kept.add(item.name)
                current = Resource.objects.filter(service=service, name=item.name).first() if service.pk else None
                stored = {f: getattr(current, f) for f in RESOURCE_FIELDS} if current is not None else None
                resource = current or Resource(service=service, name=item.name)
                resource.service = service
                for f in RESOURCE_FIELDS:
                    setattr(resource, f, getattr(item, f))
                clean_resource(resource)  # normalizes the way the saved row is, so "unchanged" compares alike
                if stored is not None and all(stored[f] == getattr(resource, f) for f in RESOURCE_FIELDS):
                    report.unchanged += 1
                    continue
                (report.updated if current else report.created).append(f"resource {service.name}/{item.name}")
                if not dry_run:
                    save_resource(resource, actor=actor)
            if prune and service.pk:
                for stale in service.resources.exclude(name__in=kept):
                    report.deleted.append(f"resource {service.name}/{stale.name}")
                    if not dry_run:
                        delete_resource(stale, actor=actor)
        if prune:
            for stale in Service.objects.exclude(name__in=listed):
                report.deleted.append(f"service {stale.name}")
                if not dry_run:
                    delete_service(stale, actor=actor)
        if not dry_run and report.changed:
            audit.record(
                "inventory.catalogue_applied",
                actor=actor,
                data={"created": report.created, "updated": report.updated, "deleted": report.deleted},
            )
    return report
