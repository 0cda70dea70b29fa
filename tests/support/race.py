"""Run the same call from several threads released at once, as concurrent deliveries of one task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_together(call: Callable[[], Any], count: int, timeout: float = 30.0) -> list[Any]:
    """``count`` threads wait at a barrier, then each makes ``call`` on its own database connection.
    Returns what each call returned, in the order they finished; a call that raised re-raises here."""
    from django.db import connections

    start = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def racer() -> None:
        try:
            start.wait()
            results.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=racer) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results
