"""A real validating resolver for the DNSSEC tests: Debian's Unbound, run in the foreground on a
loopback port, sending the zones we serve to our dns service (stub zones) and trusting the
DS records it is given, as a resolver trusting a signed parent would."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from acmezone_common.testing import free_port
from acmezone_dns.dnssec.keys import ZoneKey

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"


def ds_anchor(key: ZoneKey) -> str:
    """A trust anchor for Unbound: the key's DS record in presentation format."""
    return f"{key.zone.to_text()} DS {key.ds().to_text()}"


def unbound_or_skip() -> str:
    """The unbound binary, or skip (the Makefile installs Debian's unbound package)."""
    if not Path(UNBOUND).exists():
        pytest.skip("unbound is not installed (Debian package unbound; `make test` installs it)")
    return UNBOUND


class Unbound:
    """One Unbound process; `stop` always ends it."""

    def __init__(
        self,
        workdir: Path,
        stubs: dict[str, int],
        trust_anchors: list[str],
        *,
        insecure: tuple[str, ...] = (),
        cache_max_ttl: int = 1,
    ) -> None:
        """`stubs` maps a zone to the loopback port of its authoritative server;
        `trust_anchors` are DS (or DNSKEY) records in presentation format. Caching is capped
        at `cache_max_ttl` seconds (1: each test sees the server's answers of the moment)."""
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "unbound.log"
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{workdir}"',
            f'  pidfile: "{workdir}/unbound.pid"',
            f'  logfile: "{self.log}"',
            "  use-syslog: no",
            "  verbosity: 1",
            "  val-log-level: 2",
            "  num-threads: 1",
            "  do-not-query-localhost: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "validator iterator"',
            "  qname-minimisation: no",
            "  harden-dnssec-stripped: yes",
            "  cache-min-ttl: 0",
            f"  cache-max-ttl: {cache_max_ttl}",
            "  cache-max-negative-ttl: 1",
            "  prefetch: no",
            "  serve-expired: no",
            "  outgoing-range: 64",
            "  so-reuseport: no",
            # RFC 6761 names (test., invalid., ...) are answered NXDOMAIN by default.
            '  local-zone: "test." nodefault',
        ]
        lines += [f'  trust-anchor: "{anchor}"' for anchor in trust_anchors]
        lines += [f'  domain-insecure: "{zone}"' for zone in insecure]
        for zone, port in stubs.items():
            lines += ["stub-zone:", f'  name: "{zone}"', f"  stub-addr: 127.0.0.1@{port}"]
        self.config = workdir / "unbound.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Unbound:
        """Start and wait until it answers (a CHAOS query it answers itself)."""
        check = subprocess.run(
            [str(Path(UNBOUND).with_name("unbound-checkconf")), str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self._process = subprocess.Popen([UNBOUND, "-d", "-c", str(self.config)])
        deadline = time.monotonic() + 10
        query = dns.message.make_query("version.server", "TXT", rdclass="CH")
        while True:
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return self
            except (TimeoutError, OSError, dns.exception.Timeout):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text() if self.log.exists() else ""
                    raise AssertionError(f"unbound did not start: {log}") from None

    async def query(self, name: str, rdtype: str, *, wait: float = 5.0) -> dns.message.Message:
        """A recursive query with DO set, as a CA's resolver library would send it (async:
        the dns service under test runs on the same event loop)."""
        query = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0, payload=1232)
        return await dns.asyncquery.udp(query, "127.0.0.1", port=self.port, timeout=wait)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Unbound:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
