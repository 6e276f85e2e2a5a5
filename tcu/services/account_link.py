"""Account messages from the backend (`vehicles/{vin}/down/account`): the pairing security code and the link.

AGB 1.6 a): to pair a ConnectedDrive account with the car, the backend sends a security code *into the
car*; the customer reads it there and enters it in the portal. When the portal accepts it, the
backend says so ("account_link", linked), and the car may then hold driver profiles (privacy part B).
When the customer ends the link in the portal (AGB 7.2) the backend sends linked = false.

Payload, signed COSE_Sign1 like every backend → vehicle message (docs/protocol.md):

    {"type": "pairing_code", "vin": str, "n": uint, "issued": ms, "expires": ms, "account": str, "code": "8 digits"}
    {"type": "account_link", "vin": str, "n": uint, "issued": ms, "expires": ms, "account": str, "linked": bool}

`n` is the backend's message number: the car applies only numbers above the highest it applied, a
counter that survives an owner change, so a recorded "linked" message replayed after a sale cannot
pair the previous owner's account again. A refused message is logged with the reason and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from nacl.signing import VerifyKey

from tcu.clock import Clock
from tcu.errors import StorageError
from tcu.services.personal import PersonalData, PersonalStore, SecurityCode
from telematics_wire.account_link import MAX_MESSAGE_BYTES, PAIRING_CODE, parse_account_message
from telematics_wire.cose import verify1
from telematics_wire.errors import RejectedMessageError
from telematics_wire.records import to_millis

_LOGGER = logging.getLogger(__name__)


class AccountMessages:
    """The car's handler for account messages: shows the security code, records the paired account."""

    def __init__(
        self,
        *,
        vin: str,
        verify_key: VerifyKey | None,
        personal: PersonalStore,
        clock: Clock,
        on_change: Callable[[PersonalData], None] | None = None,
    ) -> None:
        self._vin = vin
        self._key = verify_key
        self._personal = personal
        self._clock = clock
        self._on_change = on_change
        # One message at a time, from reading the personal data to storing it: the next one's replay
        # check must see this one's number, and neither may store over the other's change.
        self._applying = asyncio.Lock()

    async def handle_downlink(self, payload: bytes) -> None:
        await self.receive(payload)

    async def receive(self, payload: bytes) -> PersonalData | None:
        """Apply one message once it is stored; None (and a log line with the reason) when it is refused."""
        try:
            async with self._applying:
                return await self._apply(payload)
        except RejectedMessageError as exc:
            _LOGGER.warning("account message refused (%s): %s", exc.code, exc)
        except StorageError:
            # Lost: the broker has it acknowledged once this returns, and the backend does not resend. The
            # customer asks the portal for a new pairing code (a link message comes again with the next change).
            _LOGGER.exception("account message not stored (the disk refused it): lost; a new pairing code is needed")
        return None

    async def _apply(self, payload: bytes) -> PersonalData:
        if self._key is None:
            raise RejectedMessageError(
                "no backend verify key pinned in this vehicle (keys.backend_verify_key)", code="bad_signature"
            )
        verified = verify1(payload, self._key, max_bytes=MAX_MESSAGE_BYTES, what="account message")
        fields = parse_account_message(verified.payload, vin=self._vin, now=self._clock.now())
        data = self._personal.current()
        if fields["n"] <= data.messages_seen:
            raise RejectedMessageError(
                f"account message {fields['n']} is not newer than message {data.messages_seen} already applied "
                "(a replay, or a message from before the last owner change)",
                code="old_version",
            )
        account: str = fields["account"]
        if fields["type"] == PAIRING_CODE:
            code = SecurityCode(code=fields["code"], account=account, expires_ms=to_millis(fields["expires"]))
            changed = replace(data, security_code=code, messages_seen=fields["n"])
            # The car's display: the customer reads the code here and enters it in the portal.
            _LOGGER.warning(
                "ConnectedDrive security code for account %s: %s (valid until %s): enter it in the portal",
                account,
                code.code,
                fields["expires"].isoformat(timespec="seconds"),
            )
        elif fields["linked"]:
            accounts = data.paired_accounts if account in data.paired_accounts else (*data.paired_accounts, account)
            changed = replace(data, paired_accounts=accounts, security_code=None, messages_seen=fields["n"])
            _LOGGER.info("ConnectedDrive account %s paired with this vehicle", account)
        else:
            # The link ended in the portal: profiles made under it stay until the owner deletes them,
            # but no new one can be created without a paired account.
            accounts = tuple(a for a in data.paired_accounts if a != account)
            changed = replace(data, paired_accounts=accounts, messages_seen=fields["n"])
            _LOGGER.info("ConnectedDrive account %s unlinked from this vehicle", account)
        await self._personal.save(changed)
        if self._on_change is not None:
            self._on_change(changed)
        return changed
