"""A stored measure as the signed order of one attempt, judged by the vehicle's own rules first.

The backend never signs an order the vehicle is bound to refuse: `order_for` builds the order and
runs the vehicle's checks on it (`MeasureOrder` validation and `check_plan`, with the vehicle's key
table), and `judge` turns a refusal into `MeasureRefusedError` naming the reason — more than 10
minutes of declared steps, a vehicle function, personal settings, a key outside the fault's service
(AGB 3.4 a to d) — before anything is stored or published.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from backend_stub.errors import MeasureRefusedError
from backend_stub.measure_store import Measure
from telematics_wire.ecu_keys import KeySpec
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, RejectedOrderError, check_plan
from telematics_wire.vehicle_mode import VehicleMode

_LOGGER = logging.getLogger(__name__)


def judge(measure: Measure, attempt: int, now: datetime, specs: Mapping[str, KeySpec]) -> None:
    """Raise MeasureRefusedError, with the vehicle's reason, when the vehicle would refuse the order."""
    try:
        order_for(measure, attempt, now, specs)
    except RejectedMessageError as exc:
        reason = f"the vehicle would refuse measure {measure.measure_id} ({exc.code}): {exc}"
        _LOGGER.warning("measure refused before sending: %s", reason)
        raise MeasureRefusedError(reason) from exc


def order_for(measure: Measure, attempt: int, now: datetime, specs: Mapping[str, KeySpec]) -> MeasureOrder:
    """The order for one attempt, checked by the vehicle's rules; raises RejectedMessageError."""
    try:
        category = MeasureCategory(measure.category)
        states = frozenset(VehicleMode(s) for s in measure.allowed_states)
    except ValueError as exc:
        raise RejectedMessageError(f"malformed measure order: {exc}") from exc
    if measure.fault is None:
        raise RejectedOrderError(
            "the measure names no fault (written before plans existed): AGB 3.4 c allows only changes "
            "that fix a named fault; send it again as a new measure with --fault-ref and --fault-service"
        )
    order = MeasureOrder(
        vin=measure.vin,
        measure_id=measure.measure_id,
        attempt=attempt,
        category=category,
        fault=measure.fault,
        allowed_states=states,
        steps=measure.steps,
        impairs=measure.impairs,
        issued=now,
        deadline=measure.deadline,
    )
    check_plan(order, specs)
    return order
