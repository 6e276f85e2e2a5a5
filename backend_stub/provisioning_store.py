"""The provisioning history in the backend's SQLite file: issued files, vehicles' results, capabilities.

Each file keeps its delivery state:

    pending ──published, PUBACK──► delivered ──vehicle's provisioning_result──► applied | rejected
       └─► superseded: a newer version was issued before this one was published,
           or (from delivered) a newer version was applied

"applied" is the vehicle's signed-for word and wins over anything, a guessed attribution included.
The vehicle names the version in every result it could read a version from; a rejection or a
deferral without one (a file that failed its signature check, say) is booked against the one
delivered, unresolved file of that vehicle when there is exactly one, and otherwise only logged:
guessing between two candidates would put a reason on the wrong file.

The store opens its own connection to the same file as BackendStore: the CLI issues files while the
backend runs, so every write is one immediate transaction, and `changes()` is a counter the running
backend polls to notice a file another process issued. Results are keyed by the record's (VIN, seq),
so taking the same record twice (a replay after a crash) changes nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import cbor2

from backend_stub.database import migrate, open_database, transaction
from backend_stub.desired_state import VehicleRecord
from backend_stub.provisioning_history import CapabilityReport, FileState, IssuedFile, ResultStatus, VehicleResult
from backend_stub.provisioning_schema import MIGRATE_TO_EPOCHS, MIGRATE_TO_VEHICLE_BUILD, SCHEMA
from telematics_wire.catalogue import Brand, Catalogue
from telematics_wire.provisioning import ProvisioningFile, parse_payload
from telematics_wire.records import from_millis, to_millis

_SELECT_FILES = (
    "SELECT vin, version, operation, issued_ms, expires_ms, signed, state, changed_ms, code, reason, "
    "publications, published_ms FROM provisioning_files"
)


def _payload(signed: bytes) -> bytes:
    """The payload of our own COSE_Sign1 message (from our database: no signature check needed)."""
    payload = cbor2.loads(signed).value[2]
    if not isinstance(payload, bytes):
        raise TypeError("stored provisioning file is not a COSE_Sign1 message")
    return payload


class ProvisioningStore:
    """The provisioning tables; created on open, next to BackendStore's in the same file."""

    def __init__(self, path: Path, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or Catalogue.load()
        self._db = open_database(path, SCHEMA)
        migrate(self._db, table="provisioning_results", column="epoch", script=MIGRATE_TO_EPOCHS)
        migrate(self._db, table="provisioning_vehicles", column="first_registration", script=MIGRATE_TO_VEHICLE_BUILD)

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    # -- vehicles --------------------------------------------------------------------------------

    def set_legal_ecall(self, vin: str, equipped: bool | None) -> bool:
        """Record the equipment; None keeps what is recorded (no for a new vehicle). Returns the value."""
        self._db.execute(
            "INSERT INTO provisioning_vehicles (vin, legal_ecall) VALUES (?, ?) "
            "ON CONFLICT (vin) DO UPDATE SET legal_ecall = coalesce(?, legal_ecall)",
            (vin, int(bool(equipped)), None if equipped is None else int(equipped)),
        )
        return self.legal_ecall(vin)

    def legal_ecall(self, vin: str) -> bool:
        row = self._db.execute("SELECT legal_ecall FROM provisioning_vehicles WHERE vin=?", (vin,)).fetchone()
        return row is not None and bool(row[0])

    def record_build(
        self,
        vin: str,
        *,
        brand: Brand | None = None,
        equipment: frozenset[str] | None = None,
        first_registration: date | None = None,
        today: date,
    ) -> VehicleRecord:
        """Record the brand, the equipment and the first registration; None keeps what is recorded. A
        new vehicle (no file issued yet) is a BMW, its equipment unrecorded, first registered `today`
        (enrolled when new); one with files from before issue 12 keeps no first registration until told.
        Raises ValueError for equipment the catalogue does not offer for the brand."""
        current = self.vehicle(vin)
        row = self._db.execute("SELECT last_version FROM provisioning_vehicles WHERE vin=?", (vin,)).fetchone()
        known = row is not None and row[0] > 0  # files issued before first registrations were recorded: no guess
        brand = brand or current.brand
        built = equipment if equipment is not None else current.equipment
        if built is not None:
            self.catalogue.check_equipment(built, brand)
        registered = first_registration or current.first_registration or (None if known else today)
        self._db.execute(
            "INSERT INTO provisioning_vehicles (vin, brand, equipment, first_registration) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (vin) DO UPDATE SET brand=excluded.brand, equipment=excluded.equipment, "
            "first_registration=excluded.first_registration",
            (
                vin,
                brand.value,
                None if built is None else ",".join(sorted(built)),
                None if registered is None else registered.isoformat(),
            ),
        )
        return self.vehicle(vin)

    def vehicle(self, vin: str) -> VehicleRecord:
        row = self._db.execute(
            "SELECT legal_ecall, brand, equipment, first_registration FROM provisioning_vehicles WHERE vin=?", (vin,)
        ).fetchone()
        if row is None:
            return VehicleRecord()
        legal, brand, equipment, registered = row
        return VehicleRecord(
            legal_ecall=bool(legal),
            brand=Brand(brand),
            equipment=None if equipment is None else frozenset(c for c in equipment.split(",") if c),
            first_registration=None if registered is None else date.fromisoformat(registered),
        )

    def next_version(self, vin: str) -> int:
        """Allocate the next version; call inside the transaction that writes the file."""
        self._db.execute(
            "INSERT INTO provisioning_vehicles (vin, last_version) VALUES (?, 1) "
            "ON CONFLICT (vin) DO UPDATE SET last_version = last_version + 1",
            (vin,),
        )
        return int(self._db.execute("SELECT last_version FROM provisioning_vehicles WHERE vin=?", (vin,)).fetchone()[0])

    # -- files -----------------------------------------------------------------------------------

    def add_file(self, file: ProvisioningFile, signed: bytes, *, operation: str, now: datetime) -> IssuedFile:
        """Store a new version as pending (inside the transaction that allocated it); it supersedes an
        older pending one, which will never be published now."""
        superseded = f"version {file.version} issued before this one was published"
        self._db.execute(
            "UPDATE provisioning_files SET state=?, changed_ms=?, reason=? WHERE vin=? AND state=?",
            (FileState.SUPERSEDED, to_millis(now), superseded, file.vin, FileState.PENDING),
        )
        self._db.execute(
            "INSERT INTO provisioning_files (vin, version, operation, issued_ms, expires_ms, signed, state, "
            "changed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                file.vin,
                file.version,
                operation,
                to_millis(file.issued),
                to_millis(file.expires),
                signed,
                FileState.PENDING,
                to_millis(now),
            ),
        )
        self._db.execute("UPDATE provisioning_changes SET counter = counter + 1")
        return self._one(" WHERE vin=? AND version=?", (file.vin, file.version))

    def _file(self, row: tuple[Any, ...]) -> IssuedFile:
        vin, version, operation, issued, expires, signed, state, changed, code, reason, publications, published = row
        return IssuedFile(
            vin=vin,
            version=version,
            operation=operation,
            issued=from_millis(issued),
            expires=from_millis(expires),
            contents=parse_payload(_payload(signed), self.catalogue),
            signed=bytes(signed),
            state=FileState(state),
            changed=from_millis(changed),
            code=code,
            reason=reason,
            publications=publications,
            published=None if published is None else from_millis(published),
        )

    def files(self, vin: str) -> list[IssuedFile]:
        return [self._file(row) for row in self._db.execute(_SELECT_FILES + " WHERE vin=? ORDER BY version", (vin,))]

    def file(self, vin: str, version: int) -> IssuedFile | None:
        return self._optional(" WHERE vin=? AND version=?", (vin, version))

    def head(self, vin: str) -> IssuedFile | None:
        """The newest file: the vehicle's desired state."""
        return self._optional(" WHERE vin=? ORDER BY version DESC LIMIT 1", (vin,))

    def _optional(self, where: str, params: tuple[Any, ...]) -> IssuedFile | None:
        row = self._db.execute(_SELECT_FILES + where, params).fetchone()
        return None if row is None else self._file(row)

    def _one(self, where: str, params: tuple[Any, ...]) -> IssuedFile:
        return self._file(self._db.execute(_SELECT_FILES + where, params).fetchone())

    def pending_vins(self) -> list[str]:
        query = "SELECT DISTINCT vin FROM provisioning_files WHERE state=? ORDER BY vin"
        return [row[0] for row in self._db.execute(query, (FileState.PENDING,))]

    def awaiting_results(self) -> dict[str, datetime]:
        """VIN → issue time of its oldest delivered file that no result has resolved yet."""
        query = "SELECT vin, min(issued_ms) FROM provisioning_files WHERE state=? GROUP BY vin"
        return {vin: from_millis(ms) for vin, ms in self._db.execute(query, (FileState.DELIVERED,))}

    def mark_published(self, vin: str, version: int, now: datetime) -> None:
        """The broker acknowledged the publication (PUBACK): pending becomes delivered."""
        self._db.execute(
            "UPDATE provisioning_files SET publications = publications + 1, published_ms = ?, "
            "changed_ms = CASE WHEN state = ? THEN ? ELSE changed_ms END, "
            "state = CASE WHEN state = ? THEN ? ELSE state END WHERE vin=? AND version=?",
            (to_millis(now), FileState.PENDING, to_millis(now), FileState.PENDING, FileState.DELIVERED, vin, version),
        )

    def changes(self) -> int:
        """A counter that moves whenever any process issues a file: cheap to poll."""
        return int(self._db.execute("SELECT counter FROM provisioning_changes").fetchone()[0])

    # -- results ---------------------------------------------------------------------------------

    def record_result(self, result: VehicleResult) -> VehicleResult | None:
        """Book a vehicle's result against its file; None if this record was taken before."""
        with self.transaction():
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO provisioning_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    result.vin,
                    result.epoch,
                    result.seq,
                    to_millis(result.created),
                    to_millis(result.received),
                    result.version,
                    result.status.value,
                    result.code,
                    result.reason,
                ),
            ).rowcount
            if not inserted:
                return None
            target = self._target(result)
            if target is not None:
                self._resolve(result, target)
                self._db.execute(
                    "UPDATE provisioning_results SET attributed=? WHERE vin=? AND epoch=? AND seq=?",
                    (target, result.vin, result.epoch, result.seq),
                )
        return replace(result, attributed=target)

    def _target(self, result: VehicleResult) -> int | None:
        if result.version is not None:
            return result.version if self.file(result.vin, result.version) is not None else None
        if result.status not in (ResultStatus.REJECTED, ResultStatus.DEFERRED):
            return None
        rows = self._db.execute(
            "SELECT version FROM provisioning_files WHERE vin=? AND state=? LIMIT 2", (result.vin, FileState.DELIVERED)
        ).fetchall()
        return int(rows[0][0]) if len(rows) == 1 else None

    def _resolve(self, result: VehicleResult, version: int) -> None:
        vin, at = result.vin, to_millis(result.received)
        unresolved = (FileState.PENDING.value, FileState.DELIVERED.value)
        if result.status in (ResultStatus.APPLIED, ResultStatus.ALREADY_APPLIED):
            self._db.execute(
                "UPDATE provisioning_files SET state=?, changed_ms=?, code=NULL, reason=NULL "
                "WHERE vin=? AND version=? AND state != ?",
                (FileState.APPLIED, at, vin, version, FileState.APPLIED),
            )
            self._db.execute(
                "UPDATE provisioning_files SET state=?, changed_ms=?, reason=? "
                "WHERE vin=? AND version < ? AND state IN (?, ?)",
                (FileState.SUPERSEDED, at, f"version {version} applied", vin, version, *unresolved),
            )
        elif result.status is ResultStatus.REJECTED:
            self._db.execute(
                "UPDATE provisioning_files SET state=?, changed_ms=?, code=?, reason=? "
                "WHERE vin=? AND version=? AND state IN (?, ?)",
                (FileState.REJECTED, at, result.code, result.reason, vin, version, *unresolved),
            )
        elif result.status is ResultStatus.DEFERRED:
            self._db.execute(
                "UPDATE provisioning_files SET reason=? WHERE vin=? AND version=? AND state IN (?, ?)",
                (f"deferred by the vehicle: {result.reason or 'no reason given'}", vin, version, *unresolved),
            )

    def results(self, vin: str, *, limit: int = 50) -> list[VehicleResult]:
        """The newest `limit` results of a vehicle, oldest first."""
        rows = self._db.execute(
            "SELECT epoch, seq, created_ms, received_ms, version, status, code, reason, attributed "
            "FROM provisioning_results WHERE vin=? ORDER BY received_ms DESC, seq DESC LIMIT ?",
            (vin, limit),
        ).fetchall()
        return [
            VehicleResult(
                vin=vin,
                epoch=bytes(epoch),
                seq=seq,
                created=from_millis(created),
                received=from_millis(received),
                version=version,
                status=ResultStatus(status),
                code=code,
                reason=reason,
                attributed=attributed,
            )
            for epoch, seq, created, received, version, status, code, reason, attributed in reversed(rows)
        ]

    # -- capability reports ----------------------------------------------------------------------

    def set_capabilities(self, report: CapabilityReport) -> bool:
        """Keep the newest report per vehicle (by the vehicle's sequence number, not arrival order)."""
        cursor = self._db.execute(
            "INSERT INTO capability_reports VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vin) DO UPDATE SET "
            "ordinal=excluded.ordinal, seq=excluded.seq, created_ms=excluded.created_ms, "
            "received_ms=excluded.received_ms, report=excluded.report "
            "WHERE CASE WHEN excluded.ordinal = capability_reports.ordinal THEN excluded.seq > capability_reports.seq "
            "ELSE excluded.received_ms >= capability_reports.received_ms END",
            (
                report.vin,
                report.ordinal,
                report.seq,
                to_millis(report.created),
                to_millis(report.received),
                cbor2.dumps(report.report),
            ),
        )
        return cursor.rowcount > 0

    def capabilities(self, vin: str) -> CapabilityReport | None:
        query = "SELECT ordinal, seq, created_ms, received_ms, report FROM capability_reports WHERE vin=?"
        row = self._db.execute(query, (vin,)).fetchone()
        if row is None:
            return None
        ordinal, seq, created, received, report = row
        return CapabilityReport(
            vin=vin,
            ordinal=ordinal,
            seq=seq,
            created=from_millis(created),
            received=from_millis(received),
            report=cbor2.loads(report),
        )
