"""The signer as the settings describe it: keys read from the key directory, or no signing."""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.name

from acmezone_common.keyfiles import decode_key
from acmezone_common.sealing import SecretSealer
from acmezone_dns import metrics
from acmezone_dns.dnssec.keys import KeyFileError, ZoneKey, keys_by_zone, read_keys
from acmezone_dns.dnssec.signer import Signer
from acmezone_dns.settings import DnsSettings


def sealer_from(settings: DnsSettings) -> SecretSealer | None:
    """The sealer of key files, when a sealing key is configured."""
    configured = settings.dnssec_sealing_key
    if configured is None or not configured.get_secret_value():
        return None
    return SecretSealer(decode_key(configured.get_secret_value(), what="dnssec_sealing_key"))


class KeyDirectory:
    """The key directory the settings name, for the zone reloader (`zone_reload.KeySource`)."""

    def __init__(self, settings: DnsSettings) -> None:
        assert settings.dnssec_key_dir is not None
        self._directory = settings.dnssec_key_dir
        self._sealer = sealer_from(settings)

    def fingerprint(self) -> object:
        """Every key file's name, mtime and size."""
        entries = []
        for path in sorted(self._directory.glob("K*.json")):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def load(self) -> dict[dns.name.Name, list[ZoneKey]]:
        """Every key, grouped by zone; `KeyFileError` when one cannot be used or none is left."""
        found = read_keys(self._directory, self._sealer)
        if not found:
            raise KeyFileError(f"DNSSEC key directory {self._directory} holds no key files")
        return keys_by_zone(found)


def make_signer(
    settings: DnsSettings,
    stats: metrics.SigningStats,
    clock: Callable[[], float] = time.time,
) -> Signer | None:
    """The signer of every zone with keys in `dnssec_key_dir`; None when signing is off.
    Raises `KeyFileError` for a key file that cannot be used (the service does not start)."""
    if settings.dnssec_key_dir is None:
        return None
    return Signer(
        KeyDirectory(settings).load(),
        validity=settings.dnssec_signature_validity_seconds,
        refresh=settings.dnssec_refresh_seconds,
        dnskey_ttl=settings.dnssec_dnskey_ttl,
        denial_rate=settings.dnssec_denial_signatures_per_second,
        denial_cache=settings.dnssec_denial_cache,
        stats=stats,
        clock=clock,
    )
