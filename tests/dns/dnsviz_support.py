"""Debian's DNSViz for the DNSSEC tests: `probe` of a zone on a loopback port, then `grok` of what
it found, and every error and warning it reports.

Both commands run under the system Python (DNSViz lives in its dist-packages), through a short
runner that works around two things of the Debian package:
- With `-N`/`-D` (delegation and DS given by hand) probe serves the parent zone itself with a BIND
  `named` on a fixed port (50053, shared with any other run at the same moment) listening on
  BIND's `localhost` ACL, which is every address of the host: the runner gives it a free port and
  loopback addresses only.
- grok with trust anchors checks pygraphviz's version through `pygraphviz.release`, which
  pygraphviz 1.7 (Debian 12) no longer has, and stops (dnsviz issue #98): the check is skipped.

How the probe is asked (what does not work, for the record): the server needs its port with `-x`
(the ports given with `-N` are ignored); the parent's named listens on ::1 when that is bindable,
so `-4` leaves the parent with "No IPv4 servers to query!"; `-D` reads DS records from a file
(on the command line it wants the rdata in literal double quotes); grok's trust anchors are
DNSKEY records, not DS; and `-a <zone>` keeps the probe from asking anything above the parent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from acmezone_common.testing import free_port

SYSTEM_PYTHON = "/usr/bin/python3"

_RUNNER = """
import sys
command, rest = sys.argv[1], sys.argv[2:]
if command == "probe":
    import dnsviz.commands.probe as m
    served = m.ZoneFileToServe
    served._next_free_port = int(rest.pop(0))
    conf = served.NAMED_CONF_TEMPLATE
    for family, address in (("listen-on", "127.0.0.1"), ("listen-on-v6", "::1")):
        old = family + " port %(port)d { localhost; };"
        assert old in conf, "dnsviz's named.conf template changed"
        conf = conf.replace(old, family + " port %(port)d { " + address + "; };")
    served.NAMED_CONF_TEMPLATE = conf
else:
    import dnsviz.commands.grok as m
    m.test_pygraphviz = lambda: None
m.main([command, *rest])
"""


def dnsviz_or_skip() -> None:
    """Skip unless DNSViz and BIND's named (which its probe needs) are installed."""
    if not Path("/usr/bin/dnsviz").exists():
        pytest.skip("dnsviz is not installed (Debian package dnsviz; `make test` installs it)")
    if shutil.which("named") is None and not Path("/usr/sbin/named").exists():
        pytest.skip("named is not installed (Debian package bind9, which dnsviz probe needs)")


async def run_dnsviz(command: str, *args: str, limit: float = 120.0) -> str:
    """One DNSViz command; its output, AssertionError when it fails or runs past `limit` seconds."""
    extra = [str(free_port())] if command == "probe" else []
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        "-c",
        _RUNNER,
        command,
        *extra,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"dnsviz {command} ran longer than {limit} s") from None
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"dnsviz {command} exited {process.returncode}: {text}"
    return text


def findings(grok: Any, path: str = "") -> dict[str, list[str]]:
    """Every error and warning in grok's JSON output, each as `where: CODE description`."""
    found: dict[str, list[str]] = {"errors": [], "warnings": []}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in found and isinstance(value, list):
                    found[key] += [
                        f"{where}: {v.get('code')} {v.get('description')}" for v in value
                    ]
                else:
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(grok, path)
    return found


def statuses(grok: Any) -> set[str]:
    """Every `status` value in grok's JSON output."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "status" and isinstance(value, str):
                    out.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(grok)
    return out


def load(path: Path) -> Any:
    """A JSON file."""
    return json.loads(path.read_text())
