"""Links between the apps' admin pages, provided by the app that owns the page.

An app never names another app's admin URL or model (tests/test_architecture.py): the owner registers, when
Django starts, a function that answers for its records (``provide("runs_of_incident", fn)`` in remediation's
``AppConfig.ready``), and a page of another app asks by that name. With no provider, the answer is empty and the
page simply shows no link, the way ``ApprovalContext.links`` carries the pipeline's links into approvals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_providers: dict[str, Callable[..., Any]] = {}


def provide(name: str, provider: Callable[..., Any]) -> None:
    _providers[name] = provider


def ask(name: str, *args: Any, default: Any = None) -> Any:
    """The provider's answer, or ``default`` when nobody provides ``name``."""
    provider = _providers.get(name)
    return provider(*args) if provider is not None else default
