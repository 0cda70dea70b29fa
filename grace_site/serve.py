"""``python -m grace_site.serve``: GRACE's web server, granian serving ``grace_site.wsgi`` (the light intake path
in front of Django), with the options that `make run`, the tests and the benchmarks share.

granian parses HTTP and keeps connections in native code and runs the WSGI application on a pool of threads
per worker process; on the light path it takes about a quarter less CPU per request than a Python HTTP server
(docs/intake.md, "Benchmarks"). The request body is streamed to the application, so a body over
``GRACE_API_MAX_BODY_BYTES`` is refused before it is read.

    python -m grace_site.serve --port 8000 --workers 2 --threads 8 --access-log

The process becomes granian (``exec``), so signals reach it directly: SIGINT or SIGTERM stop it after the
requests in flight.
"""

from __future__ import annotations

import argparse
import os
import sys

APPLICATION = "grace_site.wsgi:application"


def command(
    *,
    port: int,
    host: str = "127.0.0.1",
    workers: int = 1,
    threads: int = 4,
    access_log: bool = False,
    log_level: str = "warning",
    application: str = APPLICATION,
) -> list[str]:
    """The argv that serves ``application`` on ``host:port``: ``workers`` processes, each running the WSGI
    application on ``threads`` threads. A worker that dies is started again (granian gives up and exits when
    one dies twice within a few seconds)."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--http",
        "1",
        "--no-ws",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        # Keep idle application threads (granian's default retires them after 30 s): each holds its own
        # persistent database connection, which a new thread would open again.
        "--blocking-threads-idle-timeout",
        "600",
        "--backlog",
        "2048",
        "--respawn-failed-workers",
        "--log-level",
        log_level,
        "--access-log" if access_log else "--no-access-log",
        application,
    ]


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def _port(value: str) -> int:
    number = _positive(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m grace_site.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=os.environ.get("GRACE_PORT", "8000"))
    parser.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=_positive, default=4, help="application threads per worker (default 4)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--application", default=APPLICATION, help=f"WSGI application (default {APPLICATION})")
    options = parser.parse_args(argv)
    args = command(
        port=options.port,
        host=options.host,
        workers=options.workers,
        threads=options.threads,
        access_log=options.access_log,
        log_level=options.log_level,
        application=options.application,
    )
    os.execv(args[0], args)  # noqa: S606 - replaces this process with granian (argv list, no shell)


if __name__ == "__main__":
    main()
