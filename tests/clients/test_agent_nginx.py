"""A real nginx (Debian package) serving TLS on a loopback port from the files the agent
installs: a certificate issued by Pebble, a forced renewal, and the TLS handshake showing the new
serial a few seconds after issuance, with `nginx -s reload` run as the agent's hook.

nginx runs from a temporary prefix (config, pid, logs, temp dirs), so neither root nor /etc/nginx
nor /var/log/nginx is needed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone_clients.agent.app import AgentApp
from acmezone_common.testing import free_port
from tests.clients.agent_support import agent_settings, restartable_issuer, target
from tests.issuer.conftest import CA, ca, fake_dns

__all__ = ["ca", "fake_dns"]

NAME = "www.nginx.example.test"
SEEN_WITHIN = 5.0


@dataclass
class Nginx:
    binary: str
    prefix: Path
    port: int

    @property
    def base(self) -> list[str]:
        conf = self.prefix / "nginx.conf"
        return [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.log)]

    @property
    def log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def reload_command(self) -> str:
        return " ".join([*self.base, "-s", "reload"])

    def configure(self, cert_dir: Path) -> None:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        temp = self.prefix / "tmp"
        (self.prefix / "nginx.conf").write_text(
            f"""
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.log} notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {NAME};
        ssl_certificate {cert_dir}/fullchain.pem;
        ssl_certificate_key {cert_dir}/privkey.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
        )

    def start(self) -> None:
        """nginx daemonises once its sockets are bound: the command returning is readiness."""
        done = subprocess.run(self.base, capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr.decode() + self.log.read_text()

    def stop(self) -> None:
        subprocess.run([*self.base, "-s", "stop"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.fail("nginx missing: run `make system-deps` (Debian package nginx)")
    server = Nginx(binary, tmp_path / "nginx", free_port())
    server.prefix.mkdir()
    try:
        yield server
    finally:
        server.stop()


def served_serial(port: int, root_pem: str) -> str:
    """The serial of the certificate nginx presents, verified against Pebble's root."""
    context = ssl.create_default_context(cadata=root_pem)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


async def test_nginx_serves_the_renewed_certificate_within_seconds(
    tmp_path: Path, ca: CA, nginx: Nginx
) -> None:
    certs = tmp_path / "certs"
    hook_log = tmp_path / "hook.log"
    hook = f"{nginx.reload_command} && echo reloaded $ACMEZONE_SERIAL >> {hook_log}"
    nginx.configure(certs)
    async with restartable_issuer(tmp_path / "issuer", ca) as issuer:
        await issuer.start()
        first = await issuer.issue("www", NAME)
        # The first install comes before nginx can start (it needs the files), so without a
        # hook; nginx then starts on them and the agent that runs on has the reload hook.
        bootstrap = AgentApp(agent_settings(issuer.address), [target("www", certs)])
        await bootstrap.start()
        try:
            # Reported means finished: a bootstrap stopped before that would leave its hook
            # pending, and the next agent would run it for this serial.
            await bootstrap.wait_for(
                "www", lambda s: s.reported_serial == first.serial_number, within=60
            )
        finally:
            await bootstrap.stop()
        nginx.start()
        root = ca.pebble.root_pem()
        assert await asyncio.to_thread(served_serial, nginx.port, root) == first.serial_number

        agent = AgentApp(
            agent_settings(issuer.address), [target("www", certs, hook)], CollectorRegistry()
        )
        await agent.start()
        try:
            await agent.wait_for("www", lambda s: s.connected, within=60)
            second = await issuer.renew("certificates/www", first.serial_number)
            issued_at = second.issue_time.ToDatetime().timestamp()
            deadline = time.monotonic() + SEEN_WITHIN
            serial = first.serial_number
            while serial != second.serial_number and time.monotonic() < deadline:
                serial = await asyncio.to_thread(served_serial, nginx.port, root)
                if serial != second.serial_number:
                    await asyncio.sleep(0.05)
            seen_after = time.time() - issued_at
            assert serial == second.serial_number, (
                f"nginx still serves {serial} {SEEN_WITHIN}s after the renewal\n"
                + nginx.log.read_text()
            )
            print(f"new serial served {seen_after:.2f}s after issuance (target < {SEEN_WITHIN}s)")
            status = await agent.wait_for("www", lambda s: len(s.hook_runs) == 1, within=10)
            assert status.hook_runs[0].ok, status.hook_runs[0].output_tail
        finally:
            await agent.stop()
    assert hook_log.read_text() == f"reloaded {second.serial_number}\n"
