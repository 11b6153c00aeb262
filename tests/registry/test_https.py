"""The acme-dns HTTP API over HTTPS from certificate files, with a real TLS client pinned to a
local CA: registration and update work, a client trusting another CA is refused, and rewritten
files are served to new connections without a restart (a pair that does not load is not)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from acmezone_registry.app import RegistryApp
from acmezone_registry.http_api.tls import ReloadingCertificate
from tests.common.local_ca import Issued, LocalCa
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest


def install(issued: Issued, cert_file: Path, key_file: Path) -> None:
    """Put a certificate in place as a renewal agent does: write aside, then rename over."""
    for source, target in ((issued.key_file, key_file), (issued.cert_file, cert_file)):
        shutil.copyfile(source, target.with_suffix(".new"))
        os.replace(target.with_suffix(".new"), target)


def request(
    port: int,
    ca_file: Path,
    method: str,
    path: str,
    body: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object], int]:
    """One HTTPS request to 127.0.0.1 verified against `ca_file`: status, JSON body, and the
    serial number of the certificate the server presented."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        data = json.loads(response.read() or b"{}")
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        return response.status, data, x509.load_der_x509_certificate(der).serial_number
    finally:
        connection.close()


def serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).serial_number


def tls_of(app: RegistryApp) -> ReloadingCertificate:
    assert app.http.tls is not None
    return app.http.tls


async def test_https_api_serves_and_follows_renewed_files(tmp_path: Path) -> None:
    ca, other = LocalCa(tmp_path / "ca"), LocalCa(tmp_path / "other", name="other CA")
    first, second = ca.issue("api-1"), ca.issue("api-2")
    cert_file, key_file = tmp_path / "api.pem", tmp_path / "api.key"
    install(first, cert_file, key_file)
    async with running_registry(
        tmp_path / "reg",
        http_tls_cert_file=cert_file,
        http_tls_key_file=key_file,
        http_tls_reload_seconds=0.05,
    ) as app:
        port = app.http_address.port
        status, registration, presented = await asyncio.to_thread(
            request, port, ca.cert_file, "POST", "/register"
        )
        assert status == 201
        assert presented == serial(first)
        update = {"subdomain": str(registration["subdomain"]), "txt": acme_digest(3)}
        credentials = {
            "X-Api-User": str(registration["username"]),
            "X-Api-Key": str(registration["password"]),
        }
        status, answer, _ = await asyncio.to_thread(
            request, port, ca.cert_file, "POST", "/update", update, credentials
        )
        assert (status, answer) == (200, {"txt": acme_digest(3)})
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(request, port, other.cert_file, "POST", "/register")

        # The agent renews: the next connection gets the new certificate, no restart.
        tls = tls_of(app)
        tls.reloaded.clear()
        install(second, cert_file, key_file)
        await asyncio.wait_for(tls.reloaded.wait(), 10)
        _, _, presented = await asyncio.to_thread(request, port, ca.cert_file, "GET", "/health")
        assert presented == serial(second)

        # A certificate whose key does not match is refused; the last good one keeps serving.
        shutil.copyfile(first.cert_file, cert_file)
        assert not tls.reload_if_changed()
        status, _, presented = await asyncio.to_thread(
            request, port, ca.cert_file, "GET", "/health"
        )
        assert (status, presented) == (200, serial(second))
        assert tls.reloads == 1


def test_unloadable_files_are_named_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot load the HTTPS certificate .*absent\.pem"):
        ReloadingCertificate(tmp_path / "absent.pem", tmp_path / "absent.key", interval=1)
