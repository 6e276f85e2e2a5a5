"""`backend-stub enroll VIN --public-key FILE`: register a vehicle's key and record how it is built.

The build (legal eCall, brand, equipment, first registration) is recorded first: equipment the
catalogue refuses leaves nothing enrolled.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend_stub.cli_args import calendar_date
from backend_stub.config import BackendConfig
from backend_stub.errors import BackendConfigError
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from backend_stub.store_location import open_record_store
from tcu.clock import SystemClock
from telematics_wire.catalogue import Brand
from telematics_wire.keys import load_public_key
from telematics_wire.vin import validate_vin


def add_enroll_parser(commands: Any) -> None:
    enroll = commands.add_parser("enroll", help="register a vehicle's public key")
    enroll.add_argument("vin")
    enroll.add_argument("--public-key", type=Path, required=True)
    enroll.add_argument(
        "--legal-ecall",
        action=argparse.BooleanOptionalAction,
        help="the vehicle is equipped with EU legal eCall: every provisioning file keeps 6AF and its SIM "
        "(default: no for a new vehicle; a re-enrolment without the option keeps what is recorded)",
    )
    enroll.add_argument(
        "--brand", choices=[b.value for b in Brand], help="the brand the catalogue's terms are read for (default BMW)"
    )
    enroll.add_argument(
        "--equipment",
        type=_codes,
        help="option codes the vehicle is built with, e.g. 6AE,6AC,6AP; a code outside them is refused at booking "
        "(default: not recorded, every option code of the brand; 6AF is --legal-ecall)",
    )
    enroll.add_argument(
        "--first-registration",
        type=calendar_date,
        help="YYYY-MM-DD, the vehicle's first registration (Erstzulassung): 5y and 2+1y terms run from it "
        "(default: the day a new vehicle is enrolled; a re-enrolment without the option keeps what is recorded)",
    )
    enroll.add_argument("--config", type=Path, required=True)
    enroll.add_argument("--json", action="store_true")


def _codes(text: str) -> frozenset[str]:
    return frozenset(code.strip() for code in text.split(",") if code.strip())


def run_enroll(args: argparse.Namespace, config: BackendConfig) -> None:
    store = open_record_store(config)
    try:
        _enroll(args, config, store)
    finally:
        store.close()


def _enroll(args: argparse.Namespace, config: BackendConfig, store: BackendStore) -> None:
    vin = validate_vin(args.vin, where="VIN argument")
    public_key = bytes(load_public_key(args.public_key))
    provisioning = ProvisioningStore(config.database)
    try:  # the build first: equipment the catalogue refuses leaves nothing enrolled
        with provisioning.transaction():
            provisioning.set_legal_ecall(vin, args.legal_ecall)
            record = provisioning.record_build(
                vin,
                brand=None if args.brand is None else Brand(args.brand),
                equipment=args.equipment,
                first_registration=args.first_registration,
                today=SystemClock().now().date(),
            )
    except ValueError as exc:
        raise BackendConfigError(f"enroll {vin}: {exc}") from exc
    finally:
        provisioning.close()
    store.enroll(vin, public_key, SystemClock().now())
    equipment = "not recorded" if record.equipment is None else ",".join(sorted(record.equipment)) or "none"
    print(
        f"enrolled {vin} (legal eCall: {'yes' if record.legal_ecall else 'no'}, brand: {record.brand}, "
        f"equipment: {equipment}, first registration: {record.first_registration or 'not recorded'})"
    )
