"""Streaming credentials: the dynamic-security commands as pure values, the bookkeeping of who may stream
until when, and on a real Mosquitto with the plugin: gcid + id_token connects, reads only `<gcid>/...`,
and is refused and disconnected once its token expires or it is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.cardata.dynsec_commands import (
    RESPONSE_TOPIC,
    DynsecError,
    DynsecResult,
    command_message,
    disable_commands,
    enable_commands,
    failures,
    parse_responses,
    role_name,
)
from backend_stub.cardata.id_token import IdTokenSigner
from backend_stub.cardata.streaming_credentials import StreamingCredentials
from backend_stub.cardata.tokens import TokenSet
from hil.broker import MosquittoBroker, free_port
from hil.streaming_listener import DYNSEC_PLUGIN, StreamingListener
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tests.conftest import eventually, require_mosquitto, running_task
from tests.integration.certificates import make_tls_files

GCID = "aa111192-d570-4d3d-8835-656ee00edcd7"
OTHER = "bb222293-d570-4d3d-8835-656ee00edcd7"
VIN = "WBA00000000000001"
SCOPE = "authenticate_user openid cardata:streaming:read cardata:api:read"
SIGNER = IdTokenSigner(SigningKey.generate(), issuer="backend-stub")


def _tokens(gcid: str, now: datetime, scope: str = SCOPE) -> TokenSet:
    id_token, expires = SIGNER.sign(gcid=gcid, client_id="client", now=now)
    return TokenSet(
        gcid=gcid,
        client_id="client",
        access_token="a",
        refresh_token="r",
        id_token=id_token if "openid" in scope else None,
        scope=scope,
        expires=expires,
    )


# -- the commands, pure ---------------------------------------------------------------------------


def test_enable_confines_the_gcid_to_its_own_topics_and_ends_an_older_connection() -> None:
    commands = enable_commands(GCID, "the-id-token")
    assert [command["command"] for command in commands] == [
        "createRole", "createClient", "setClientPassword", "disableClient", "enableClient",
    ]  # fmt: skip
    role, client, password = commands[0], commands[1], commands[2]
    assert role["rolename"] == role_name(GCID)
    allowed = {(acl["acltype"], acl["topic"]) for acl in role["acls"] if acl["allow"]}
    assert allowed == {("subscribePattern", f"{GCID}/#"), ("publishClientReceive", f"{GCID}/#")}
    assert client == {
        "command": "createClient", "username": GCID, "textname": "CarData account",
        "roles": [{"rolename": role_name(GCID)}],
    }  # fmt: skip
    assert password == {"command": "setClientPassword", "username": GCID, "password": "the-id-token"}
    assert disable_commands(GCID) == [{"command": "disableClient", "username": GCID}]


@pytest.mark.parametrize("gcid", ["", "a/b", "+", "#", f"{GCID}/#", "a\0b", "x" * 65, "sp ace"])
def test_a_gcid_that_is_no_plain_name_never_becomes_a_role_or_topic(gcid: str) -> None:
    with pytest.raises(ValueError, match="gcid"):
        enable_commands(gcid, "pw")
    with pytest.raises(ValueError, match="gcid"):
        disable_commands(gcid)


def test_each_command_carries_a_correlation_id() -> None:
    payload, correlations = command_message(disable_commands(GCID) + disable_commands(OTHER), "p1")
    sent = json.loads(payload)["commands"]
    assert correlations == ["p1-0", "p1-1"]
    assert [command["correlationData"] for command in sent] == correlations


def test_answers_that_leave_the_broker_where_we_want_it_are_no_failures() -> None:
    answer = {
        "responses": [
            {"command": "createRole", "error": "Role already exists", "correlationData": "p-0"},
            {"command": "createClient", "error": "Client already exists", "correlationData": "p-1"},
            {"command": "setClientPassword", "correlationData": "p-2"},
            {"command": "disableClient", "error": "Client not found"},
            {"command": "enableClient", "error": "Client not found"},
        ]
    }
    results = parse_responses(json.dumps(answer).encode())
    assert results[2] == DynsecResult(command="setClientPassword", correlation="p-2", error=None)
    assert failures(results) == [results[4]]


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b'{"responses": {}}', b'{"responses": [1]}', b'{"responses": [{"command": 3}]}',
     b"[" * 100_000, b'"' + b"x" * (1 << 20) + b'"', "not bytes", None],
)  # fmt: skip
def test_a_malformed_answer_is_a_dynsec_error(payload: object) -> None:
    with pytest.raises(DynsecError):
        parse_responses(payload)


@settings(max_examples=50)
@given(st.binary(max_size=200))
def test_parse_responses_is_total(payload: bytes) -> None:
    with contextlib.suppress(DynsecError):  # any bytes: a list of results or our own error, nothing else
        parse_responses(payload)


# -- the bookkeeping, without a broker ------------------------------------------------------------


def _credentials(clock: ManualClock, **options: Any) -> StreamingCredentials:
    return StreamingCredentials(BrokerConfig(port=1), clock, **options)


def test_a_streaming_token_is_watched_until_it_expires() -> None:
    clock = ManualClock()
    credentials = _credentials(clock)
    tokens = _tokens(GCID, clock.now())
    credentials.tokens_issued(tokens)
    credentials.tokens_issued(_tokens(OTHER, clock.now(), "authenticate_user cardata:api:read"))  # no id_token
    assert credentials.expiry_of(GCID) == tokens.expires
    assert credentials.expiry_of(OTHER) is None
    clock.advance(3599)
    assert credentials.expire_due() == []
    clock.advance(1)
    assert credentials.expire_due() == [GCID]
    assert credentials.expiry_of(GCID) is None
    assert credentials.expire_due() == []


def test_revoking_and_a_missing_consent_stop_streaming() -> None:
    clock = ManualClock()
    credentials = _credentials(clock, may_stream=lambda gcid: gcid == GCID)
    credentials.tokens_issued(_tokens(OTHER, clock.now()))
    assert credentials.expiry_of(OTHER) is None
    credentials.tokens_issued(_tokens(GCID, clock.now()))
    credentials.revoke_all(GCID)
    assert credentials.expiry_of(GCID) is None


def test_accounts_that_expired_while_the_backend_was_down_are_disabled_at_start() -> None:
    clock = ManualClock()
    credentials = _credentials(clock)
    credentials.track({GCID: clock.now() - timedelta(seconds=1), OTHER: clock.now() + timedelta(minutes=5)})
    assert credentials.expiry_of(GCID) is None
    assert credentials.expiry_of(OTHER) == clock.now() + timedelta(minutes=5)


def _tokens_of(client_id: str, gcid: str, now: datetime) -> TokenSet:
    id_token, expires = SIGNER.sign(gcid=gcid, client_id=client_id, now=now)
    return TokenSet(
        gcid=gcid, client_id=client_id, access_token="a", refresh_token="r", id_token=id_token, scope=SCOPE,
        expires=expires,
    )  # fmt: skip


async def test_the_newest_token_holds_the_login_and_consent_turns_it_off_and_on() -> None:
    clock, consenting, fake = ManualClock(), {GCID}, AnsweringBroker()
    credentials = _credentials(clock, may_stream=lambda gcid: gcid in consenting, clients=lambda _id, _will: fake)
    async with running_task(credentials.run(), name="streaming-credentials"):
        credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
        credentials.tokens_issued(_tokens_of("fleet", GCID, clock.now()))
        await asyncio.wait_for(credentials.applied(GCID), 5)
        assert credentials.holder(GCID) == "fleet"
        consenting.clear()  # the owner revoked the last consent
        credentials.consents_changed(GCID)
        assert (credentials.holder(GCID), credentials.expiry_of(GCID)) == (None, None)  # at once, unconfirmed
        consenting.add(GCID)  # and granted one again while the token still lives: no new sign-in needed
        credentials.consents_changed(GCID)
        await asyncio.wait_for(credentials.applied(GCID), 5)
        assert credentials.holder(GCID) == "fleet"
        credentials.tokens_revoked(GCID)  # a revoked sign-in is forgotten: a consent does not bring it back
        credentials.consents_changed(GCID)
        assert credentials.holder(GCID) is None


async def test_a_second_client_holds_the_login_only_once_the_broker_confirmed_it() -> None:
    """Until the broker answers, the first client's connection is still up: it must not get the second
    client's keys, so the first stays the holder until then (and a refusal leaves no holder)."""
    clock, fake = ManualClock(), AnsweringBroker(hold=True)
    credentials = _credentials(clock, clients=lambda _id, _will: fake)
    async with running_task(credentials.run(), name="streaming-credentials"):
        credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
        await eventually(lambda: bool(fake.held), within=5, what="the enable commands")
        assert credentials.holder(GCID) is None  # not confirmed yet: nobody can read the stream
        fake.release()
        await asyncio.wait_for(credentials.applied(GCID), 5)
        assert credentials.holder(GCID) == "insurer"
        credentials.tokens_issued(_tokens_of("fleet", GCID, clock.now()))
        await eventually(lambda: bool(fake.held), within=5, what="the second client's commands")
        assert credentials.holder(GCID) == "insurer"
        fake.release()
        await asyncio.wait_for(credentials.applied(GCID), 5)
        assert credentials.holder(GCID) == "fleet"
        fake.hold, fake.refuse = False, True
        credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
        with pytest.raises(DynsecError):
            await asyncio.wait_for(credentials.applied(GCID), 5)
        assert credentials.holder(GCID) is None


async def test_a_failing_check_is_logged_and_the_checks_go_on(caplog: pytest.LogCaptureFixture) -> None:
    """A locked database in the periodic review, or a gcid no command may carry, ends one pass (or one
    gcid), never `run()` and with it the backend's TaskGroup."""
    clock, consenting, broken = ManualClock(), {GCID}, [0]

    def may_stream(gcid: str) -> bool:
        if broken[0]:
            broken[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return gcid in consenting

    fake = AnsweringBroker()
    credentials = _credentials(clock, may_stream=may_stream, clients=lambda _id, _will: fake, check_every_s=0.01)
    credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
    credentials.tokens_issued(dataclasses.replace(_tokens_of("insurer", OTHER, clock.now()), gcid="x/#"))
    consenting.add("x/#")  # the review would now enable the malformed gcid: dynsec_commands refuses it
    broken[0] = 2
    consenting.discard(GCID)  # `backend-stub cardata revoke` in another process
    async with running_task(credentials.run(), name="streaming-credentials") as task:
        await eventually(lambda: credentials.expiry_of(GCID) is None, within=5, what="the revoke being noticed")
        assert not task.done()
    assert "database is locked" in caplog.text
    assert "x/#" in caplog.text


def test_a_token_issued_before_the_consent_streams_once_the_consent_comes() -> None:
    clock, consenting = ManualClock(), set()
    credentials = _credentials(clock, may_stream=lambda gcid: gcid in consenting)
    credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
    assert credentials.holder(GCID) is None
    consenting.add(GCID)
    clock.advance(3600)  # ...but not once the token expired
    credentials.expire_due()
    credentials.consents_changed(GCID)
    assert credentials.holder(GCID) is None


async def test_the_periodic_review_catches_a_revoke_made_by_another_process() -> None:
    clock, consenting = ManualClock(), {GCID, OTHER}
    asked: list[str] = []

    async def on_database_thread(job: Any) -> Any:
        asked.append("run")
        return job()

    credentials = _credentials(clock, may_stream=lambda gcid: gcid in consenting, run=on_database_thread)
    credentials.tokens_issued(_tokens_of("insurer", GCID, clock.now()))
    credentials.track({OTHER: clock.now() + timedelta(minutes=5)}, holders={OTHER: "fleet"})  # from before a restart
    consenting.clear()  # `backend-stub cardata revoke` in its own process: nobody told us
    await credentials.review_all()
    assert (credentials.holder(GCID), credentials.holder(OTHER)) == (None, None)
    assert asked == ["run"], "the consent reads run where the store's connection lives, once per review"


# -- on a real Mosquitto with the dynamic-security plugin -------------------------------------------


@dataclass
class Stream:
    """A third party's paho client (BMW's published client uses paho), as username = gcid."""

    gcid: str
    password: str
    port: int
    ca_file: Path
    received: list[str] = field(default_factory=list)
    granted: list[bool] = field(default_factory=list)
    connected: list[int] = field(default_factory=list)  # CONNACK reason codes
    disconnected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # No reconnecting: each connection is one the test made, and a refused client's thread ends at once.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        client.tls_set_context(ssl.create_default_context(cafile=str(self.ca_file)))
        client.username_pw_set(self.gcid, self.password)
        client.on_connect = lambda _c, _u, _f, code, _p: self.connected.append(code.value)
        client.on_subscribe = lambda _c, _u, _m, codes, _p: self.granted.extend(c.value < 0x80 for c in codes)
        client.on_message = lambda _c, _u, message: self.received.append(message.topic)
        client.on_disconnect = lambda _c, _u, _f, code, _p: self.disconnected.append(str(code))
        self.client = client

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    require_mosquitto()
    if not DYNSEC_PLUGIN.exists():
        pytest.skip(f"{DYNSEC_PLUGIN} is not installed (Debian's mosquitto package ships it)")
    listener = StreamingListener(tls=make_tls_files(tmp_path / "tls"), port=free_port())
    async with MosquittoBroker(tmp_path / "mosquitto", streaming=listener) as started:
        yield started


async def test_gcid_and_id_token_stream_own_topics_only_until_expiry_or_revocation(broker: MosquittoBroker) -> None:
    listener = broker.streaming
    assert listener is not None
    clock = ManualClock(wall=datetime.now(UTC))
    admin = BrokerConfig(
        port=listener.port,
        tls=True,
        ca_file=listener.tls.ca_file,
        username=listener.admin_username,
        password=listener.admin_password,
    )
    credentials = StreamingCredentials(admin, clock, check_every_s=3600)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)  # the backend's streams
    publisher.tls_set_context(ssl.create_default_context(cafile=str(listener.tls.ca_file)))
    publisher.username_pw_set(listener.admin_username, listener.admin_password)
    streams: list[Stream] = []

    def stream(gcid: str, password: str) -> Stream:
        started = Stream(gcid, password, listener.port, listener.tls.ca_file)
        streams.append(started)
        started.start()
        return started

    async with running_task(credentials.run(), name="streaming-credentials"):
        try:
            tokens = _tokens(GCID, clock.now())
            assert tokens.id_token is not None
            credentials.tokens_issued(tokens)
            credentials.tokens_issued(_tokens(OTHER, clock.now()))
            await asyncio.wait_for(credentials.applied(GCID), 10)
            await asyncio.wait_for(credentials.applied(OTHER), 10)

            owner = stream(GCID, tokens.id_token)
            await eventually(lambda: owner.connected == [0], within=10, what="gcid + id_token connected")
            owner.client.subscribe([(f"{GCID}/{VIN}", 0), (f"{OTHER}/#", 0), ("#", 0), (f"+/{VIN}", 0)])
            await eventually(lambda: len(owner.granted) == 4, within=10, what="SUBACK")
            assert owner.granted == [True, False, False, False]

            publisher.connect("127.0.0.1", listener.port)
            publisher.loop_start()
            for gcid in (OTHER, GCID):
                publisher.publish(f"{gcid}/{VIN}", b"{}", qos=1).wait_for_publish(10)
            await eventually(lambda: owner.received == [f"{GCID}/{VIN}"], within=10, what="own stream")

            wrong = stream(GCID, "not-the-token")  # a guessed or stale password is refused
            await eventually(lambda: wrong.connected != [], within=10, what="refusal")
            assert wrong.connected[0] >= 0x80

            newer = _tokens(GCID, clock.now() + timedelta(seconds=1))  # a refresh: the newest token wins
            assert newer.id_token is not None
            credentials.tokens_issued(newer)
            await asyncio.wait_for(credentials.applied(GCID), 10)
            await eventually(lambda: owner.disconnected != [], within=10, what="older connection ended")
            refreshed = stream(GCID, newer.id_token)
            stale = stream(GCID, tokens.id_token)
            await eventually(lambda: refreshed.connected == [0], within=10, what="the newest token connects")
            await eventually(lambda: stale.connected != [], within=10, what="the older token is refused")
            assert stale.connected[0] >= 0x80

            clock.advance(3601)  # the newest id_token expired: refused and disconnected
            assert credentials.expire_due() == sorted([GCID, OTHER])
            await asyncio.wait_for(credentials.applied(GCID), 10)
            await eventually(lambda: refreshed.disconnected != [], within=10, what="kicked at expiry")
            late = stream(GCID, newer.id_token)
            await eventually(lambda: late.connected != [], within=10, what="refusal after expiry")
            assert late.connected[0] >= 0x80

            again = _tokens(GCID, clock.now())  # signed in again, then every consent ends
            assert again.id_token is not None
            credentials.tokens_issued(again)
            await asyncio.wait_for(credentials.applied(GCID), 10)
            back = stream(GCID, again.id_token)
            await eventually(lambda: back.connected == [0], within=10, what="connected again")
            credentials.revoke_all(GCID)
            await asyncio.wait_for(credentials.applied(GCID), 10)
            await eventually(lambda: back.disconnected != [], within=10, what="kicked at revocation")
        finally:
            publisher.disconnect()
            publisher.loop_stop()
            for started in streams:
                started.close()


async def test_disabling_an_account_the_broker_never_had_is_no_failure(broker: MosquittoBroker) -> None:
    listener = broker.streaming
    assert listener is not None
    admin = BrokerConfig(
        port=listener.port, tls=True, ca_file=listener.tls.ca_file,
        username=listener.admin_username, password=listener.admin_password,
    )  # fmt: skip
    credentials = StreamingCredentials(admin, ManualClock(), check_every_s=3600)
    async with running_task(credentials.run(), name="streaming-credentials"):
        gcid = str(uuid.uuid4())
        credentials.revoke_all(gcid)  # a client the broker never had: "Client not found" is no failure
        await asyncio.wait_for(credentials.applied(gcid), 10)
        credentials.tokens_issued(_tokens(gcid, datetime.now(UTC)))
        await asyncio.wait_for(credentials.applied(gcid), 10)


class RefusingBroker:
    """The admin link to a broker whose plugin refuses every command, after one answer that is garbage."""

    identifier = "fake-admin"

    def __init__(self) -> None:
        self.answers: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

    async def __aenter__(self) -> RefusingBroker:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[aiomqtt.Message]:
        while True:
            yield await self.answers.get()

    async def subscribe(self, topic: str, *, qos: int = 0) -> object:
        return None

    def ack(self, message: aiomqtt.Message) -> None:
        return None

    async def publish(  # aiomqtt's signature, `timeout` included
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        self.publish_nowait(topic, payload, qos=qos, retain=retain)

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        commands = json.loads(payload)["commands"]
        refused = [{**command, "error": "Internal error"} for command in commands]
        for body in (b"\xff not json", json.dumps({"responses": refused}).encode()):
            self.answers.put_nowait(aiomqtt.Message(RESPONSE_TOPIC, body, qos=1, retain=False, mid=1, properties=None))


class AnsweringBroker(RefusingBroker):
    """The admin link to a broker that applies every command; with `hold`, its answers wait for `release()`."""

    def __init__(self, *, hold: bool = False) -> None:
        super().__init__()
        self.hold, self.refuse = hold, False
        self.held: list[aiomqtt.Message] = []

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        commands = json.loads(payload)["commands"]
        error = {"error": "Internal error"} if self.refuse else {}
        answers = [{"command": command["command"], "correlationData": command["correlationData"], **error}
                   for command in commands]  # fmt: skip
        body = json.dumps({"responses": answers}).encode()
        self.held.append(aiomqtt.Message(RESPONSE_TOPIC, body, qos=1, retain=False, mid=1, properties=None))
        if not self.hold:
            self.release()

    def release(self) -> None:
        for message in self.held:
            self.answers.put_nowait(message)
        self.held.clear()


async def test_a_refusal_reaches_whoever_waits_and_a_garbage_answer_is_skipped() -> None:
    fake = RefusingBroker()
    credentials = StreamingCredentials(BrokerConfig(port=1), ManualClock(), clients=lambda _id, _will: fake)
    async with running_task(credentials.run(), name="streaming-credentials"):
        credentials.tokens_issued(_tokens(GCID, datetime.now(UTC)))
        with pytest.raises(DynsecError, match="Internal error"):
            await asyncio.wait_for(credentials.applied(GCID), 10)
