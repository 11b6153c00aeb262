"""Every repository of the registry over one database, built together because they share the
revision log (its write turn and commit listeners) and the record-set projection."""

from __future__ import annotations

from dataclasses import dataclass

from acmezone_common.sealing import SecretSealer
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.record_sets import RecordSets
from acmezone_registry.storage.registrations import RegistrationRepository
from acmezone_registry.storage.replay_guard import ReplayGuard
from acmezone_registry.storage.revision_log import RevisionLog
from acmezone_registry.storage.tsig_keys import TsigKeyRepository
from acmezone_registry.storage.txt_values import TxtValueRepository


@dataclass(frozen=True)
class Stores:
    """The revision log, the projection and one repository per aggregate."""

    log: RevisionLog
    record_sets: RecordSets
    registrations: RegistrationRepository
    txt_values: TxtValueRepository
    tsig_keys: TsigKeyRepository
    replay_guard: ReplayGuard

    @classmethod
    def open(cls, database: Database, zone: str, sealer: SecretSealer) -> Stores:
        """The repositories over `database` for the challenge zone `zone`."""
        log = RevisionLog(database, zone)
        record_sets = RecordSets(log, zone)
        return cls(
            log=log,
            record_sets=record_sets,
            registrations=RegistrationRepository(log, record_sets),
            txt_values=TxtValueRepository(log, record_sets),
            tsig_keys=TsigKeyRepository(log, zone, sealer),
            replay_guard=ReplayGuard(log),
        )
