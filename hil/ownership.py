"""Scenario steps and checks of a car's owners: pairing an account, a driver profile, the sale.

Steps (hil.actions.ACTION_TABLE): `pair` asks the backend for a security code, waits until the car
shows it (its personal data file, what `tcu account` reads), enters it in the portal and waits until
the car knows its account (AGB 1.6 a); `profile` runs `tcu profile add`; `consent` grants a data-sharing
consent to the linked account; `owner_change` runs `tcu owner-change` (AGB 7.2) beside the running agent.

Checks (hil.expectations' CHECK_TABLE): the car holds nothing personal, the backend holds no personal
value from before the owner change, the account link and its consents ended, and the new owner's
handover list names the services (AGB 7.3); the car holds exactly the driver profiles and paired
accounts expected (`personal_settings`: what a remote measure must never lose, whatever it rolled back).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from backend_stub.handover import handover_list
from hil.outcome import Outcome
from hil.timeline import EventKind
from tcu.errors import ConfigError
from tcu.services.personal import PersonalStore
from tcu.virtual_time import real_seconds
from telematics_wire.catalogue import Catalogue, Category

if TYPE_CHECKING:
    from hil.expectations import Evidence
    from hil.run_context import RunContext
    from hil.scenario import Step

_T = TypeVar("_T")
SALE_NOTICE = timedelta(weeks=6)
DEFAULT_ACCOUNT = "owner@example.org"
_WAIT_S = 30.0


async def _until(what: str, probe: Callable[[], _T | None]) -> _T:
    """Poll `probe` until it gives a value (real time: the car and the backend are real processes)."""
    deadline = asyncio.get_running_loop().time() + real_seconds(_WAIT_S)  # virtual time would cut it short
    while (value := probe()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"waited {_WAIT_S:g} s in vain: {what}")
        await asyncio.sleep(real_seconds(0.2))  # another process writes what is probed: no event to wait on
    return value


def _personal(run: RunContext) -> PersonalStore:
    return PersonalStore(run.bench.layout.data_dir(run.scenario.vin) / "personal.cbor")


async def _tcu(run: RunContext, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tcu.cli",
        *args,
        "--config",
        str(run.bench.agent.config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode:
        raise ConfigError(f"tcu {' '.join(args)} failed: {err.decode(errors='replace').strip()[-500:]}")
    return out.decode(errors="replace")


async def pair(run: RunContext, step: Step) -> None:
    vin, backend = run.scenario.vin, run.bench.backend
    accounts, clock = backend.accounts, backend.clock
    account = str(step.args.get("account", DEFAULT_ACCOUNT))

    def request_code() -> None:
        if accounts.contact(account) is None:
            accounts.create(account, name="Scenario owner", email=account, now=clock.now())
        accounts.request_code(vin, account, clock.now())

    # On the backend's database thread: its connections are that thread's while it runs.
    await backend.operate(request_code)
    personal = _personal(run)
    shown = await _until(
        "the car shows the security code",
        lambda: None if (code := personal.current().security_code) is None or code.account != account else code,
    )
    run.event(EventKind.ACTION, "security code shown in the car", f"for {account}")
    await backend.operate(accounts.pair, vin, account, shown.code, clock.now())
    await _until("the car knows its account", lambda: True if account in personal.current().paired_accounts else None)
    run.event(EventKind.ACTION, "account paired", account)


async def profile(run: RunContext, step: Step) -> None:
    await _tcu(run, "profile", "add", str(step.args.get("name", "Driver")))
    run.event(EventKind.ACTION, "driver profile created", str(step.args.get("name", "Driver")))


async def consent(run: RunContext, step: Step) -> None:
    recipient = str(step.args.get("recipient", "Insurer via CarData"))
    backend = run.bench.backend
    await backend.operate(backend.accounts.grant_consent, run.scenario.vin, recipient, backend.clock.now())


async def owner_change(run: RunContext, _step: Step) -> None:
    await _tcu(run, "owner-change")
    run.event(EventKind.ACTION, "owner change in the car", "personal data wiped; report queued")


ACTIONS: dict[str, Callable[[RunContext, Step], Any]] = {
    "pair": pair,
    "profile": profile,
    "consent": consent,
    "owner_change": owner_change,
}


# -- checks ----------------------------------------------------------------------------------------

# What the sale check counts as the seller's personal data, judged on its own and not through
# retention's `scrub` (a gap in the scrub must fail this check, not hide behind it): a field that
# holds a person's data in whatever record — the eCall's MSD (position, recent positions, direction,
# passengers, VIN), the occupants, a bare position — and any VSS path of a personal category (not
# status or maintenance data, privacy part D), at any depth of a record body.
PERSONAL_FIELDS = frozenset({"msd", "occupants", "latitude", "longitude", "latitude_deg", "longitude_deg"})


def personal_left(value: object, catalogue: Catalogue) -> list[str]:
    """The personal fields and paths anywhere in `value` that still hold something."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            empty = item is None or (isinstance(item, dict | list) and not item)
            if key in PERSONAL_FIELDS and not empty:
                found.append(str(key))
            elif isinstance(key, str) and key.startswith("Vehicle.") and not catalogue.category_of(key).technical:
                found.append(key)
            else:
                found += personal_left(item, catalogue)
    elif isinstance(value, list):
        for item in value:
            found += personal_left(item, catalogue)
    return found


def _car_wiped(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    if evidence.personal_path is None:
        return False, "no personal data file of the car to read"
    data = PersonalStore(evidence.personal_path).load()
    blocked = [c.value for c in Category if not data.allows(c)]
    ok = data.owner >= 1 and (data.profiles, data.paired_accounts, data.security_code, blocked) == ((), (), None, [])
    return ok, (
        f"owner changes {data.owner}; driver profiles {len(data.profiles)}, paired accounts "
        f"{list(data.paired_accounts)}, security code {'shown' if data.security_code else 'none'}, "
        f"blocked categories {blocked or 'none'}"
    )


def _backend_clean(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    backend = evidence.backend
    changes = backend.accounts.owner_changes(evidence.vin)
    if not changes:
        return False, "the backend handled no owner change of this vehicle"
    _, epoch, seq = changes[-1]
    before = backend.store.order_of(evidence.vin, epoch, seq)
    assert before is not None
    catalogue = backend.provisioning_store.catalogue
    found: list[str] = []
    old = 0
    for record in backend.store.records(evidence.vin):
        ordinal = backend.store.epoch_ordinal(evidence.vin, record.epoch) or 0
        if (ordinal, record.seq) >= (before.ordinal, before.seq):
            continue
        old += 1
        left = personal_left(record.body, catalogue)
        if left:
            found.append(f"seq {record.seq}: {', '.join(sorted(set(left))[:3])}")
    last = [
        v.path
        for v in backend.store.last_values(evidence.vin)
        if not catalogue.category_of(v.path).technical and v.seq < seq
    ]
    ok = old > 0 and not found and not last
    return ok, (
        f"{old} record(s) from before the owner change (seq {seq}); with personal values: {found[:5] or 'none'}; "
        f"personal last values from before: {last[:5] or 'none'}"
    )


def _unlinked(evidence: Evidence, _args: dict[str, Any]) -> tuple[bool, str]:
    accounts = evidence.backend.accounts
    links = accounts.links(evidence.vin)
    consents = accounts.consents(evidence.vin)
    active = accounts.link(evidence.vin)
    ok = bool(links) and active is None and all(c.ended is not None for c in consents)
    return ok, (
        f"links: {[(link.account, link.end_reason or 'active') for link in links]}; consents: "
        f"{[(c.recipient, 'ended' if c.ended else 'active') for c in consents]}"
    )


def _handover(evidence: Evidence, args: dict[str, Any]) -> tuple[bool, str]:
    backend = evidence.backend
    handed = backend.accounts.last_handover(evidence.vin)
    now = backend.clock.now()
    live = handover_list(backend.provisioning_store, evidence.vin, now)
    wanted = [str(code) for code in args.get("services", [])]
    listed = {row["code"]: row for row in live}
    missing = [code for code in wanted if code not in listed]
    # AGB 7.4: a fixed term cancelled on sale ends six weeks after the notice, not at its term's end.
    latest = (now + SALE_NOTICE).date().isoformat()
    not_cancelled = [
        code
        for code in (str(c) for c in args.get("cancelled_on_sale", []))
        if code not in listed or not listed[code].get("cancelled_on") or (listed[code].get("end") or "9999") > latest
    ]
    ok = handed is not None and not missing and not not_cancelled
    shown = "; ".join(
        f"{r['code']} {r['state']} until {r.get('end') or 'unlimited'}"
        + (f" (cancelled {r['cancelled_on']})" if r.get("cancelled_on") else "")
        for r in live
    )
    return ok, (
        f"told at the owner change: {'yes' if handed else 'no'} ({len(handed[1]) if handed else 0} service(s)); "
        f"now: {shown or 'no services'}; missing {missing or 'none'}; "
        f"not ending by {latest} on sale: {not_cancelled or 'none'}"
    )


def _names(args: dict[str, Any], key: str) -> list[str] | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{key} = {value!r}: expected a list of names")
    return list(value)


def personal_settings(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The car's personal data file holds exactly these driver profiles and paired accounts, in order:
    what a remote measure must never lose (AGB 3.4 d), whatever it rolled back."""
    profiles, accounts = _names(args, "profiles"), _names(args, "accounts")
    if profiles is None and accounts is None:
        raise ConfigError("needs profiles = [...] or accounts = [...]")
    if evidence.personal_path is None:
        raise ConfigError("the runner gave no personal data file of the car")
    data = PersonalStore(evidence.personal_path).load()
    found_profiles, found_accounts = [p.name for p in data.profiles], list(data.paired_accounts)
    failures = []
    if profiles is not None and found_profiles != profiles:
        failures.append(f"driver profiles {found_profiles}, expected {profiles}")
    if accounts is not None and found_accounts != accounts:
        failures.append(f"paired accounts {found_accounts}, expected {accounts}")
    detail = f"the car holds driver profiles {found_profiles} and paired accounts {found_accounts}"
    limit = ", ".join(f"{k} {v}" for k, v in (("profiles", profiles), ("accounts", accounts)) if v is not None)
    return Outcome.unless(failures, detail, measured=f"profiles {found_profiles}", limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], tuple[bool, str] | Outcome]] = {
    "car_personal_data_wiped": _car_wiped,
    "backend_personal_data_gone": _backend_clean,
    "account_unlinked": _unlinked,
    "handover_lists": _handover,
    "personal_settings": personal_settings,
}
