"""The action interface every executor family implements.

An action is registered code with a parameter schema (a DRF serializer, so bad
parameters are field errors, never a traceback), a risk tier, an idempotent
flag, a timeout and four functions:

- ``observe(params) -> facts``: read-only; contracts are predicates over facts.
- ``snapshot(params, directory) -> state``: capture what rollback needs. Files
  written into ``directory`` are digested into the snapshot's manifest;
  ``state`` is a small JSON dict (prior capacity, log level...).
- ``execute(params) -> result``: do the change; returns a JSON dict.
- ``rollback(params, state, directory) -> result``: restore from the snapshot.
  Called only after the manifest has been verified.

Errors: raise ``TransientActionError`` for what a retry may fix (timeouts,
throttling, connection resets), ``ActionUnavailable`` when the family cannot
be reached or is not configured (the run is BLOCKED with the reason),
``CannotObserve`` (an ``ActionUnavailable``) when it can be reached but cannot
see what its contract needs, such as a missing privilege, and
``ActionRefused`` when the parameters are valid but the action must not run
(a path outside the allowed roots, a value out of range).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rest_framework import serializers

# The width of the target columns (HealRun, resilience listings, outcome records).
TARGET_MAX_LENGTH = 300


class ActionError(Exception):
    """An action failed. ``transient`` errors may be retried."""

    transient = False


class TransientActionError(ActionError):
    transient = True


class ActionRefused(ActionError):
    """The action will not run with these parameters (and nothing was changed)."""


class ActionUnavailable(ActionError):
    """The action's family is not configured or not reachable."""


class CannotObserve(ActionUnavailable):
    """The action cannot observe what its contract needs (a missing privilege hides the facts).

    Acting or verifying on what it can see would be acting blind: "nothing blocked" would be
    reported while the lock is held. Nothing was changed; the run must end BLOCKED with this
    reason, never SUCCEEDED (and never count as a failure of the playbook).
    """


Facts = dict[str, Any]
Observe = Callable[[dict], Facts]
Snapshot = Callable[[dict, Path], dict]
Execute = Callable[[dict], dict]
Rollback = Callable[[dict, dict, Path], dict]


@dataclass(frozen=True)
class Action:
    name: str
    family: str
    params: type[serializers.Serializer]
    observe: Observe
    execute: Execute
    tier: int = 1
    idempotent: bool = True
    timeout: float = 30.0
    snapshot: Snapshot | None = None
    rollback: Rollback | None = None
    description: str = ""
    # The parameter that names what the action touches (breakers, rate limits, cooldowns)...
    target_param: str = ""
    # ...and those that tell two same-named things apart (engine, account and region, context
    # and namespace), outermost first; empty ones (the configured default) are left out.
    scope_params: tuple[str, ...] = ()
    # Contract used when a playbook step declares none.
    default_contract: list[dict] = field(default_factory=list)
    # The inventory resource kind it acts on, and which parameters come from that resource
    # ({"path": "target", "namespace": "scope.namespace"}): a playbook can never set those itself.
    resource_kind: str = ""
    binds: dict[str, str] = field(default_factory=dict)

    def bind(self, resource: dict) -> dict:
        """The parameters taken from an inventory resource (``{"target", "scope", ...}``)."""
        bound = {}
        for param, source in self.binds.items():
            if source.startswith("scope."):
                value = (resource.get("scope") or {}).get(source.removeprefix("scope."), "")
            else:
                value = resource.get(source, "")
            if value not in ("", None):
                bound[param] = value
        return bound

    def canonical(self, params: dict) -> dict:
        """Parameters with the target spelled one way (a path with its symlinks resolved): what cooldowns,
        budgets, breakers, snapshots and learning key on."""
        if self.canonicalize is None:
            return params
        return self.canonicalize(params)

    canonicalize: Callable[[dict], dict] | None = None

    def validate(self, params: dict) -> dict:
        """Validated parameters, or ``rest_framework.exceptions.ValidationError`` naming the field."""
        serializer = self.params(data=params)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def target(self, params: dict) -> str:
        """What the step touches, e.g. ``local:/srv/orders.sqlite3`` or ``kubernetes:prod/payments/web``."""
        if not self.target_param:
            return self.family
        parts = [str(params[name]) for name in self.scope_params if params.get(name)]
        target = f"{self.family}:{'/'.join([*parts, str(params.get(self.target_param, ''))])}"
        if len(target) > TARGET_MAX_LENGTH:  # still one key per target, within the columns that store it
            digest = hashlib.sha256(target.encode()).hexdigest()[:16]
            target = f"{target[: TARGET_MAX_LENGTH - len(digest) - 1]}~{digest}"
        return target

    @property
    def reversible(self) -> bool:
        return self.snapshot is not None and self.rollback is not None


class Registry:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def register(self, action: Action) -> Action:
        if action.name in self._actions:
            raise ValueError(f"action {action.name!r} is registered twice")
        if action.tier not in (1, 2, 3):
            raise ValueError(f"action {action.name!r}: tier must be 1, 2 or 3")
        if not action.resource_kind or action.target_param not in action.binds:
            raise ValueError(f"action {action.name!r}: must bind its target parameter to an inventory resource kind")
        self._actions[action.name] = action
        return action

    def get(self, name: str) -> Action:
        try:
            return self._actions[name]
        except KeyError:
            raise KeyError(f"unknown action {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._actions

    def all(self) -> list[Action]:
        return sorted(self._actions.values(), key=lambda a: a.name)


registry = Registry()
