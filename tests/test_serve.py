"""``python -m grace_site.serve``: a bad option is refused with a sentence and a non-zero exit, before any
server starts (the server itself is started by every test that uses ``tests.support.processes.start_web``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grace_site import serve
from tests.support.processes import ROOT


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--port", "0"], "argument --port: 0 is not a positive whole number"),
        (["--port", "70000"], "argument --port: 70000 is not a TCP port (1-65535)"),
        (["--workers", "two"], "argument --workers: 'two' is not a whole number"),
        (["--threads", "-1"], "argument --threads: -1 is not a positive whole number"),
    ],
)
def test_a_bad_option_exits_2_with_a_sentence(arguments, says):
    done = subprocess.run(
        [sys.executable, "-m", "grace_site.serve", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 2
    assert says in done.stderr


def test_the_command_serves_grace_as_wsgi_with_the_given_workers_and_threads():
    argv = serve.command(port=8123, workers=3, threads=7, access_log=True)

    assert argv[:3] == [sys.executable, "-m", "granian"]

    def value(option: str) -> str:
        return argv[argv.index(option) + 1]

    assert (value("--interface"), value("--host"), value("--port")) == ("wsgi", "127.0.0.1", "8123")
    assert (value("--workers"), value("--blocking-threads")) == ("3", "7")
    assert "--access-log" in argv and "--respawn-failed-workers" in argv
    assert argv[-1] == "grace_site.wsgi:application"
