"""The CarData facade the HTTP layer calls: each method checks who asks, then answers as BMW's DTOs do.

Every method takes the caller's gcid (and client_id) from a verified token (backend_stub.cardata.tokens)
and raises only `backend_stub.cardata.errors`: a malformed VIN is BadRequest, a VIN not mapped to the
caller's account Forbidden (the same for another owner's car and one that does not exist: nothing
leaks), a container of another account or client NotFound.

Only the last transmitted values are served (the seed: "Sie erhalten jeweils die vom Fahrzeug zuletzt
ausgelesenen und an die BMW Group übertragenen Werte. Eine Echtzeitabfrage ... ist nicht möglich"),
and of them only the keys in the container, the owner's consent for this client and the capability
at request time — and every answer that carried data is logged for the transaction report.

The stores share the backend's database connection thread: while the backend runs, call these
through `BackendStub.database.run` (the HTTP layer does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from backend_stub.cardata import reports
from backend_stub.cardata.capability import Capability, capabilities, entitlements_now
from backend_stub.cardata.catalogue import CardataCatalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.errors import BadRequest, Forbidden, Unauthorized
from backend_stub.cardata.records import Container, VehicleMapping
from backend_stub.cardata.timestamps import iso_z
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from tcu.clock import Clock
from telematics_wire.errors import VinError
from telematics_wire.records import MAX_MILLIS, from_millis
from telematics_wire.vin import validate_vin

__all__ = ["CardataService"]
_LOGGER = logging.getLogger(__name__)

_BRANDS = {"BMW": "BMW", "BMW i": "BMWi", "MINI": "MINI"}  # ours → BMW's VehicleDto enum


class CardataService:
    def __init__(
        self,
        store: CardataStore,
        catalogue: CardataCatalogue,
        records: BackendStore,
        provisioning: ProvisioningStore,
        clock: Clock,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.records = records
        self.provisioning = provisioning
        self.clock = clock

    def _now(self, now: datetime | None) -> datetime:
        return now if now is not None else self.clock.now()

    # -- who may see what ------------------------------------------------------------------------------

    def _account(self, gcid: str) -> str:
        account = self.store.account_of(gcid) if isinstance(gcid, str) else None
        if account is None:
            raise Unauthorized("the token names no known customer (gcid)")
        return account

    def _own_vehicle(self, gcid: str, vin: object) -> str:
        self._account(gcid)
        if not isinstance(vin, str):
            raise BadRequest("vin must be text")
        try:
            checked = validate_vin(vin)
        except VinError as exc:
            raise BadRequest(str(exc)[:200]) from exc
        if checked not in self.store.vehicles_of(gcid):
            raise Forbidden(f"vehicle {checked} is not mapped to this customer")
        return checked

    def _consented(self, vin: str, client_id: str, now: datetime) -> frozenset[str]:
        """The keys of the caller's `vin` its owner consents to for this client now; Forbidden without any.

        Every per-vehicle answer needs it, not only the data: the build, the SIM and the capability
        reasons (which name the categories the owner blocked) are the owner's to share as well."""
        consented = self.store.consented_keys(vin, client_id, now)
        if not consented:
            raise Forbidden(f"the owner of {vin} has not consented to this client receiving its data")
        return consented

    # -- vehicles --------------------------------------------------------------------------------------

    def vehicle_mappings(
        self, gcid: str, client_id: str | None = None, now: datetime | None = None
    ) -> list[VehicleMapping]:
        """The customer's vehicles now (BMW's VehicleMappingDto); asked by a client, only those whose owner
        consents to it (a revoked client learns no VIN)."""
        self._account(gcid)
        now = self._now(now)
        result = []
        for vin in self.store.vehicles_of(gcid):
            link = self.store.owner_link(vin)
            if client_id is not None and not self.store.consented_keys(vin, client_id, now):
                continue
            if link is not None:
                result.append(VehicleMapping(vin=vin, mapped_since=link[2]))
        return result

    def basic_data(self, gcid: str, client_id: str, vin: str, now: datetime | None = None) -> dict[str, Any]:
        """BMW's VehicleDto, from what the backend knows of the build and the SIM (the rest is left empty)."""
        vin = self._own_vehicle(gcid, vin)
        self._consented(vin, client_id, self._now(now))
        build = self.provisioning.vehicle(vin)
        entitlements, _ = entitlements_now(vin, self.clock.now(), self.provisioning)
        return {
            "vin": vin,
            "brand": _BRANDS.get(build.brand.value, "BMW"),
            "isTelematicsCapable": self.records.public_key(vin) is not None,
            "simStatus": entitlements.sim.value,
            "fullSAList": "" if build.equipment is None else ",".join(sorted(build.equipment)),
            "constructionDate": "" if build.first_registration is None else build.first_registration.isoformat(),
        }

    def capabilities(self, gcid: str, client_id: str, vin: str, now: datetime | None = None) -> list[Capability]:
        """The capability service's answer for one of the customer's vehicles, every key by name."""
        now = self._now(now)
        vin = self._own_vehicle(gcid, vin)
        self._consented(vin, client_id, now)
        return self._capabilities(vin, now)

    def _capabilities(self, vin: str, now: datetime) -> list[Capability]:
        return capabilities(
            vin, now=now, catalogue=self.catalogue, provisioning=self.provisioning, records=self.records
        )

    def telematic_data(
        self, gcid: str, client_id: str, vin: str, container_id: str, now: datetime | None = None
    ) -> dict[str, dict[str, str]]:
        """{key: {"value", "unit", "timestamp"}}: the last transmitted values of the keys in the container
        that the owner consents to for this client and that are available now. Logs a "rest" transfer
        of exactly the keys returned."""
        vin = self._own_vehicle(gcid, vin)
        now = self._now(now)
        container = self.store.container(gcid, client_id, container_id)
        consented = self._consented(vin, client_id, now)
        available = {found.key for found in self._capabilities(vin, now) if found.available}
        data = self._values(vin, container.keys & consented & available)
        self.store.log_transfer(gcid, client_id, vin, "rest", data.keys(), now)
        return data

    def _values(self, vin: str, keys: Iterable[str]) -> dict[str, dict[str, str]]:
        wanted = [self.catalogue.entries[key] for key in sorted(keys)]
        last = {value.path: value for value in self.records.last_values(vin)} if wanted else {}
        data: dict[str, dict[str, str]] = {}
        for entry in wanted:
            if entry.signal is not None and entry.signal in last:
                stored = last[entry.signal]
                text = entry.text(stored.value)
                if text is not None:
                    data[entry.key] = {"value": text, "unit": entry.unit or "", "timestamp": iso_z(stored.timestamp)}
            elif entry.event == "ecall":
                started = self._last_ecall(vin)
                if started is not None:
                    data[entry.key] = {"value": iso_z(started), "unit": entry.unit or "", "timestamp": iso_z(started)}
        return data

    def _last_ecall(self, vin: str) -> datetime | None:
        """When the newest emergency call began; nothing of what it carried (the MSD is the PSAP's)."""
        newest = None
        for record in self.records.records(vin, kind="ecall"):
            started = record.body.get("session_started_ms", record.body.get("at_ms"))
            if isinstance(started, int) and not isinstance(started, bool) and 0 <= started <= MAX_MILLIS:
                moment = from_millis(started)
                newest = moment if newest is None or moment > newest else newest
        return newest

    # -- containers ------------------------------------------------------------------------------------

    def create_container(  # noqa: PLR0917 - positional as the HTTP layer calls it through `run`
        self, gcid: str, client_id: str, name: object, purpose: object, keys: object, now: datetime | None = None
    ) -> Container:
        self._account(gcid)
        if not isinstance(keys, list | tuple):
            raise BadRequest("technicalDescriptors must be a list of CarData keys")
        return self.store.create_container(gcid, client_id, name, purpose, keys, self._now(now))

    def containers(self, gcid: str, client_id: str) -> list[Container]:
        self._account(gcid)
        return self.store.containers(gcid, client_id)

    def container(self, gcid: str, client_id: str, container_id: str) -> Container:
        self._account(gcid)
        return self.store.container(gcid, client_id, container_id)

    def delete_container(self, gcid: str, client_id: str, container_id: str, now: datetime | None = None) -> None:
        self._account(gcid)
        self.store.delete_container(gcid, client_id, container_id, self._now(now))

    # -- the owner's consent ---------------------------------------------------------------------------

    def grant(
        self, gcid: str, vin: str, client_id: str, keys_or_categories: object, now: datetime | None = None
    ) -> frozenset[str]:
        """The owner consents to `client_id` receiving these keys or categories of `vin` (added)."""
        vin = self._own_vehicle(gcid, vin)
        if not isinstance(keys_or_categories, list | tuple | set | frozenset):
            raise BadRequest("keys must be a list of CarData keys or categories")
        return self.store.grant(vin, client_id, keys_or_categories, self._now(now))

    def revoke(self, gcid: str, vin: str, client_id: str, now: datetime | None = None) -> None:
        """The owner withdraws every key from `client_id`: REST answers and streaming stop at once."""
        vin = self._own_vehicle(gcid, vin)
        self.store.revoke(vin, client_id, self._now(now))

    def consents(self, gcid: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """The owner's consents in force: [{"vin", "clientId", "keys"}]."""
        self._account(gcid)
        now = self._now(now)
        return [
            {"vin": vin, "clientId": client_id, "keys": sorted(keys)}
            for vin in self.store.vehicles_of(gcid)
            for _, client_id, keys in self.store.consenting_clients(vin, now)
        ]

    # -- reports ---------------------------------------------------------------------------------------

    def data_report(self, gcid: str, now: datetime | None = None) -> dict[str, Any]:
        self._account(gcid)
        return reports.data_report(gcid, self.store, self.records, self.catalogue, self._now(now))

    def transaction_report(self, gcid: str, now: datetime | None = None) -> dict[str, Any]:
        self._account(gcid)
        return reports.transaction_report(gcid, self.store, self._now(now))

    def data_report_html(self, gcid: str, now: datetime | None = None) -> str:
        return reports.report_page("CarData data report", self.data_report(gcid, now))

    def transaction_report_html(self, gcid: str, now: datetime | None = None) -> str:
        return reports.report_page("CarData transaction report", self.transaction_report(gcid, now))
