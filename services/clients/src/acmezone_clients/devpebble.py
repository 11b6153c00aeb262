"""A local Pebble ACME CA (Debian package `pebble`) and the dev zone, for `make run` and tests.

Debian ships the binary without Pebble's test TLS certificates, so this module makes a throwaway
CA and a `127.0.0.1`/`localhost` certificate for Pebble's HTTPS listener, writes Pebble's JSON
config, starts it with the given DNS server, and waits until the directory answers. The issuer
then trusts `ca_bundle` through its `acme_ca_bundle` setting.

Only for loopback use: never point anything but a test or a `make run` issuer at it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acmezone_common.testing import free_port

logger = logging.getLogger(__name__)


def write_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost/127.0.0.1 server certificate: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmezone dev pebble TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class LocalPebble:
    """One Pebble process on loopback ports, configured for fast, deterministic tests."""

    def __init__(
        self,
        workdir: Path,
        *,
        dns_server: str | None,
        http01_port: int,
        listen_port: int = 0,
        eab_keys: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        binary: str = "pebble",
        tls_dir: Path | None = None,
        extra_config: dict[str, object] | None = None,
    ) -> None:
        self.workdir = workdir
        self._dns_server = dns_server
        self._http01_port = http01_port
        self.listen_port = listen_port or free_port()
        self.management_port = free_port()
        self._eab_keys = eab_keys
        self._extra_env = extra_env or {}
        self._binary = binary
        # Settings only a newer Pebble knows (its `profiles` block), merged into the config.
        self._extra_config = extra_config or {}
        self._process: subprocess.Popen[bytes] | None = None
        self.tls_dir = tls_dir or workdir / "tls"
        self.ca_bundle = self.tls_dir / "ca.pem"

    @property
    def directory_url(self) -> str:
        """The ACME directory URL."""
        return f"https://127.0.0.1:{self.listen_port}/dir"

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def start(self) -> None:
        """Write config and TLS material, start Pebble, wait until its directory answers."""
        binary = shutil.which(self._binary)
        if binary is None:
            raise FileNotFoundError(f"{self._binary} not found (Debian package `pebble`)")
        cert, key = self.tls_dir / "cert.pem", self.tls_dir / "key.pem"
        if not (self.ca_bundle.exists() and cert.exists() and key.exists()):
            write_tls_material(self.tls_dir)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.listen_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self._http01_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": bool(self._eab_keys),
                "externalAccountMACKeys": self._eab_keys or {},
                **self._extra_config,
            }
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        command = [binary, "-config", str(config_path)]
        if self._dns_server:
            command += ["-dnsserver", self._dns_server]
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            **self._extra_env,
        }
        with (self.workdir / "pebble.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our arguments
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        context = self._ssl_context()
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"pebble exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(  # noqa: S310 - https on loopback
                    self.directory_url, context=context, timeout=1
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"pebble not ready: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of Pebble's log, for failure messages."""
        path = self.workdir / "pebble.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def root_pem(self) -> str:
        """Pebble's (per-run) issuing root, to verify issued chains against."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=5) as response:
            return str(response.read().decode())

    def cert_status(self, serial_hex: str) -> dict[str, object]:
        """Pebble's view of a certificate (`Status`: Valid or Revoked)."""
        url = f"https://127.0.0.1:{self.management_port}/cert-status-by-serial/{serial_hex}"
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=5) as response:
            result: dict[str, object] = json.loads(response.read())
            return result

    def stop(self) -> None:
        """Terminate Pebble."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    async def astart(self) -> None:
        """`start` in a worker thread, for asyncio callers."""
        await asyncio.to_thread(self.start)


DEV_ZONE = """\
; The dev zone of `make run`: a domain you "own", already delegated. The issuer in dev mode asks
; the registry for the registration label `<domain with dots as dashes>`, so this CNAME points at
; the registration the issuer will create for example.test (and *.example.test).
$ORIGIN example.test.
$TTL 60
@                SOA   ns1.acme.example.test. hostmaster.example.test. 1 3600 600 86400 1
@                NS    ns1.acme.example.test.
@                A     127.0.0.1
www              A     127.0.0.1
_acme-challenge  CNAME example-test.acme.example.test.
"""


def write_dev_zone(path: Path) -> Path:
    """Write the dev zone file (see DEV_ZONE) unless the operator already edited one there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEV_ZONE)
    return path


def main() -> None:
    """`python -m acmezone_clients.devpebble`: run Pebble for `make run` until SIGTERM/SIGINT."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="A local Pebble ACME CA for development.")
    parser.add_argument("--workdir", type=Path, default=Path("var/pebble"))
    parser.add_argument("--listen-port", type=int, default=14000)
    parser.add_argument("--management-port", type=int, default=15000)
    parser.add_argument("--http01-port", type=int, default=5002)
    parser.add_argument("--dns-server", default="127.0.0.1:5353")
    parser.add_argument("--binary", default="pebble", help="the Pebble to run ($PEBBLE_BIN)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pebble = LocalPebble(
        args.workdir,
        dns_server=args.dns_server,
        http01_port=args.http01_port,
        listen_port=args.listen_port,
        binary=args.binary,
        # Upstream's test profiles; Debian's Pebble 2.4 ignores the block.
        extra_config={
            "profiles": {
                "default": {"description": "90 days", "validityPeriod": 7776000},
                "shortlived": {"description": "6 days", "validityPeriod": 518400},
            }
        },
    )
    pebble.management_port = args.management_port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pebble.start()
    print(
        f"pebble ACME directory {pebble.directory_url} (TLS CA {pebble.ca_bundle}); "
        f"roots: https://127.0.0.1:{pebble.management_port}/roots/0",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if pebble._process is not None and pebble._process.poll() is not None:
                print(pebble.log_tail(), flush=True)
                raise SystemExit(1)
    finally:
        pebble.stop()


if __name__ == "__main__":
    main()
