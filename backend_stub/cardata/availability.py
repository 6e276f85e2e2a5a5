"""The capability service at publish time: which CarData keys a vehicle can deliver now, for streaming.

REST answers only keys the capability service calls available at request time (`service.py`);
streaming and push must not be looser: a SIM deactivated, a term ended or a category the customer
blocked in the car's privacy settings stops those keys on the stream too, at once — not only at the
next REST request. `backend_stub.cardata.capability` decides; this reads its verdict per VIN, without
its "has the vehicle delivered this signal" rule: the reading to be sent is that delivery.

    availability = StoreAvailability(config, catalogue)   # on the streamer's database thread
    availability.available(vin, now) -> frozenset of keys
    availability.close()

The stores are opened on first use, on the calling thread: their connections are that thread's own
(the streamer's database thread), never the backend's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from backend_stub.cardata.capability import capabilities
from backend_stub.cardata.catalogue import CardataCatalogue
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from backend_stub.store_location import StoreSettings, open_record_store

__all__ = ["Availability", "StoreAvailability"]


class Availability(Protocol):
    def available(self, vin: str, now: datetime) -> frozenset[str]: ...

    def close(self) -> None: ...


class StoreAvailability:
    """The capability service's "available" keys, on read connections of its own."""

    def __init__(self, config: StoreSettings, catalogue: CardataCatalogue) -> None:
        self._config = config
        self._catalogue = catalogue
        self._stores: tuple[ProvisioningStore, BackendStore] | None = None

    def available(self, vin: str, now: datetime) -> frozenset[str]:
        if self._stores is None:
            provisioning = ProvisioningStore(self._config.database)
            try:
                self._stores = (provisioning, open_record_store(self._config, read_only=True))
            except BaseException:
                provisioning.close()
                raise
        provisioning, records = self._stores
        found = capabilities(
            vin, now=now, catalogue=self._catalogue, provisioning=provisioning, records=records, delivered=True
        )
        return frozenset(item.key for item in found if item.available)

    def close(self) -> None:
        if self._stores is not None:
            for store in self._stores:
                store.close()
            self._stores = None
