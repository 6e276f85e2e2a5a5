"""The backend under hostile input: one message is at most one rejection, never a crash, never a lost
batch, and the store holds only what it — and `backend-stub last` / `records` — can read back.

Driven through the sans-I/O `Ingest` on a real SQLite file; envelopes the agent's codec would refuse to
seal are built by hand (`_sealed`), with the vehicle's real key where the attack is authenticated.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey
from nacl.utils import random as random_bytes

from backend_stub.cli import main as backend_cli
from backend_stub.database import open_database, transaction
from backend_stub.errors import DatabaseError
from backend_stub.ingest import Ingest, IngestService
from backend_stub.store import BackendStore
from hil.broker import MosquittoBroker
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock, SystemClock
from telematics_wire.envelope import open_ack, seal_record
from telematics_wire.records import MAX_MILLIS, Record, RecordKind, to_millis
from tests.conftest import OTHER_VIN, VIN, eventually, require_mosquitto

RECORDS = f"vehicles/{VIN}/up/records"
STATUS = f"vehicles/{VIN}/up/status"
OTHER_RECORDS = f"vehicles/{OTHER_VIN}/up/records"
BIGNUM = 10**5000  # str() of it raises ValueError (Python's 4,300-digit limit); ~2 KB as CBOR
BIGNUM_SHOWN = f"an integer of {BIGNUM.bit_length()} bits"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A backend config for the query commands (they only open the database)."""
    path = tmp_path / "backend.toml"
    path.write_text('database = "backend.sqlite3"\n\n[keys]\nprivate_key = "backend.key"\n')
    return path


@pytest.fixture
def store(config: Path, vehicle_key: PrivateKey, clock: ManualClock) -> Iterator[BackendStore]:
    store = BackendStore(config.parent / "backend.sqlite3")
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    yield store
    store.close()


@pytest.fixture
def ingest(store: BackendStore, backend_key: PrivateKey, clock: ManualClock) -> Ingest:
    return Ingest(store, backend_key, clock, max_payload_bytes=64 * 1024)


def _sealed(box: Box, content: dict[str, Any]) -> bytes:
    """An envelope sealed with `box` whatever its content: what a faulty or hostile car can send."""
    nonce = random_bytes(Box.NONCE_SIZE)
    header = {"vin": content["vin"], "seq": content["seq"]}
    return cbor2.dumps({"v": 1, **header, "nonce": nonce, "box": box.encrypt(cbor2.dumps(content), nonce).ciphertext})


def _telemetry(clock: ManualClock, signals: dict[str, Any], *, offset_s: float = 0) -> Record:
    created = clock.now() + timedelta(seconds=offset_s)
    return Record(kind=RecordKind.TELEMETRY, created=created, body={"signals": signals})


def _speed(clock: ManualClock, value: float, *, offset_s: float = 0) -> Record:
    stamp = to_millis(clock.now() + timedelta(seconds=offset_s))
    return _telemetry(clock, {"Vehicle.Speed": {"v": value, "t": stamp}}, offset_s=offset_s)


def _batch(ingest: Ingest, store: BackendStore, box: Box, *messages: tuple[str, bytes]) -> set[int]:
    """Handle messages in one transaction, as `IngestService` does; the sequence numbers acknowledged."""
    with store.transaction():
        for topic, payload in messages:
            ingest.handle(topic, payload)
    return {seq for _, ack in ingest.take_acks() for seq in open_ack(box, ack, vin=VIN).seqs}


def _cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert backend_cli([*args, "--config", str(config)]) == 0
    return capsys.readouterr().out


# -- one message, one rejection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"v": BIGNUM, "vin": VIN, "seq": 1}, f"version {BIGNUM_SHOWN}"),
        ({"v": 1, "vin": VIN, "seq": BIGNUM}, f"'seq' is {BIGNUM_SHOWN}"),
        ({"v": 1, "vin": VIN, "seq": -BIGNUM}, f"'seq' is {BIGNUM_SHOWN}"),
    ],
    ids=["bignum-v", "bignum-seq", "negative-bignum-seq"],
)
def test_unauthenticated_bignum_header_is_one_short_rejection_and_the_batch_commits(
    ingest, store, vehicle_box, clock, header: dict[str, Any], reason: str
) -> None:
    attack = cbor2.dumps({**header, "nonce": bytes(24), "box": bytes(1000)})
    assert 3000 < len(attack) < 4000
    acked = _batch(
        ingest,
        store,
        vehicle_box,
        (RECORDS, seal_record(vehicle_box, VIN, 1, _speed(clock, 1.0))),
        (RECORDS, attack),
        (RECORDS, seal_record(vehicle_box, VIN, 2, _speed(clock, 2.0, offset_s=1))),
    )
    assert acked == {1, 2}
    assert store.seqs(VIN) == [1, 2]
    [rejection] = store.rejections(VIN)
    assert reason in rejection.reason
    assert len(rejection.reason) < 200


def test_a_message_failing_midway_is_undone_alone_and_the_rest_of_the_batch_commits(
    ingest, store, vehicle_box, backend_key, clock, monkeypatch
) -> None:
    """Whatever a message makes go wrong (here the last-value update fails after the record row was
    written), its own writes are undone and it is one rejection; the batch around it commits."""
    update = BackendStore._update_last_values

    def failing(self: BackendStore, record: Any, received: Any, ordinal: int) -> tuple[str, ...]:
        if record.seq == 2:
            raise RuntimeError("simulated failure after the record row was written")
        return update(self, record, received, ordinal)

    monkeypatch.setattr(BackendStore, "_update_last_values", failing)
    forged = seal_record(Box(PrivateKey.generate(), backend_key.public_key), VIN, 9, _speed(clock, 666.0))
    acked = _batch(
        ingest,
        store,
        vehicle_box,
        (RECORDS, seal_record(vehicle_box, VIN, 1, _speed(clock, 1.0))),
        (RECORDS, forged),
        (RECORDS, seal_record(vehicle_box, VIN, 2, _speed(clock, 2.0, offset_s=1))),
        (RECORDS, seal_record(vehicle_box, VIN, 3, _speed(clock, 3.0, offset_s=2))),
    )
    assert acked == {1, 3}  # never an ack for what is not stored
    assert store.seqs(VIN) == [1, 3]
    assert [v.value for v in store.last_values(VIN)] == [3.0]
    reasons = [r.reason for r in store.rejections(VIN)]
    assert len(reasons) == 2
    assert "failed authentication" in reasons[0]  # the rejection before the failure was kept
    assert "RuntimeError: simulated failure" in reasons[1]
    assert (ingest.stats.stored, ingest.stats.rejected) == (2, 2)
    # The vehicle resends seq 2 once the fault is gone: stored then, as if nothing had happened.
    monkeypatch.setattr(BackendStore, "_update_last_values", update)
    resent = seal_record(vehicle_box, VIN, 2, _speed(clock, 2.0, offset_s=1))
    assert _batch(ingest, store, vehicle_box, (RECORDS, resent)) == {2}
    assert store.seqs(VIN) == [1, 2, 3]


def test_a_corrupt_enrolled_key_rejects_that_vehicle_only(ingest, store, vehicle_box, backend_key, clock) -> None:
    store.enroll(OTHER_VIN, bytes(7), clock.now())  # a damaged row: PyNaCl refuses to build the box
    other = seal_record(Box(PrivateKey.generate(), backend_key.public_key), OTHER_VIN, 1, _speed(clock, 5.0))
    acked = _batch(
        ingest,
        store,
        vehicle_box,
        (RECORDS, seal_record(vehicle_box, VIN, 1, _speed(clock, 1.0))),
        (OTHER_RECORDS, other),
        (RECORDS, seal_record(vehicle_box, VIN, 2, _speed(clock, 2.0, offset_s=1))),
    )
    assert acked == {1, 2}
    assert store.seqs(VIN) == [1, 2]
    [rejection] = store.rejections(OTHER_VIN)
    assert "could not process the message" in rejection.reason


@pytest.mark.parametrize(
    ("ts", "seq"),
    [(MAX_MILLIS + 1, 1), (10**15, 1), (-1, 1), (True, 1), (1, 2**63), (1, 2**64), (1, 0)],
    ids=["ts-year-10000", "ts-year-33658", "ts-negative", "ts-true", "seq-2^63", "seq-2^64", "seq-0"],
)
def test_sealed_record_with_out_of_range_header_is_one_rejection(
    ingest, store, vehicle_box, clock, ts: int, seq: int
) -> None:
    attack = _sealed(vehicle_box, {"vin": VIN, "seq": seq, "kind": "telemetry", "ts": ts, "body": {}})
    good = seal_record(vehicle_box, VIN, 1, _speed(clock, 1.0))
    assert _batch(ingest, store, vehicle_box, (RECORDS, attack), (RECORDS, good)) == {1}
    assert store.seqs(VIN) == [1]
    [rejection] = store.rejections(VIN)
    assert "outside" in rejection.reason or "missing or not int" in rejection.reason


# -- signals: only usable readings become last values -----------------------------------------------------


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"v": 9.0, "t": 2**63}, 'time "t" is 9223372036854775808, not milliseconds since 1970'),
        ({"v": 9.0, "t": 2**63 - 1}, 'time "t" is 9223372036854775807'),
        ({"v": 9.0, "t": MAX_MILLIS + 1}, "up to year 9999"),
        ({"v": 9.0, "t": -1}, 'time "t" is -1'),
        ({"v": 9.0, "t": True}, 'time "t" is True'),
        ({"v": 9.0, "t": 1.5e12}, 'time "t" is 1500000000000.0'),
        ({"v": b"\x00\x01", "t": "NOW"}, "value is 2 bytes, not bool, int, float or text"),
        ({"v": BIGNUM, "t": "NOW"}, f"value is {BIGNUM_SHOWN}, beyond a CBOR integer"),
        ({"v": 2**64, "t": "NOW"}, "beyond a CBOR integer"),
        ({"v": {"nested": 1}, "t": "NOW"}, "value is a dict"),
        ({"v": [1, 2], "t": "NOW"}, "value is an array whose item 0 is 1, not text"),
        ({"v": None, "t": "NOW"}, "value is None"),
        ({"t": "NOW"}, 'not a map with a value "v"'),
    ],
    ids=lambda case: None if isinstance(case, str) else "-".join(f"{k}:{type(v).__name__}" for k, v in case.items()),
)
def test_unusable_signal_is_kept_in_its_record_but_never_becomes_a_last_value(
    ingest, store, vehicle_box, clock, config, capsys, item: dict[str, Any], reason: str
) -> None:
    now = to_millis(clock.now())
    if item.get("t") == "NOW":
        item = {**item, "t": now + 2000}
    good = {"Vehicle.Speed": {"v": 50.0, "t": now}}
    _batch(ingest, store, vehicle_box, (RECORDS, seal_record(vehicle_box, VIN, 1, _telemetry(clock, good))))
    odd = _telemetry(clock, {"Vehicle.Speed": item, "Vehicle.Cabin.Door": {"v": True, "t": now + 2000}}, offset_s=2)
    # Stored and acknowledged all the same: the car must not resend it forever.
    assert _batch(ingest, store, vehicle_box, (RECORDS, seal_record(vehicle_box, VIN, 2, odd))) == {2}
    assert store.seqs(VIN) == [1, 2]
    last = {v.path: v.value for v in store.last_values(VIN)}
    assert last == {"Vehicle.Speed": 50.0, "Vehicle.Cabin.Door": True}  # the good signal beside it moved
    [note] = store.rejections(VIN)
    assert "record seq 2 stored, but not taken as last values: signal 'Vehicle.Speed'" in note.reason
    assert reason in note.reason
    assert ingest.stats.rejected == 0  # the message itself was not refused
    # A later usable reading still moves the value: nothing is pinned, and both views print.
    _batch(ingest, store, vehicle_box, (RECORDS, seal_record(vehicle_box, VIN, 3, _speed(clock, 60.0, offset_s=3))))
    assert store.last_value(VIN, "Vehicle.Speed") == 60.0
    assert '"value": 60.0' in _cli(config, capsys, "last", VIN, "--json")
    assert "seq=2" in _cli(config, capsys, "records", VIN)


def test_a_last_value_pinned_by_an_older_backend_reads_and_heals(
    ingest, store, vehicle_box, clock, config, capsys
) -> None:
    """A database written before the check may hold a last value stamped 2^63 - 1 ms: reading it must
    not crash, and the next usable reading must replace it."""
    with closing(sqlite3.connect(config.parent / "backend.sqlite3")) as db, db:
        row = (VIN, "Vehicle.Speed", cbor2.dumps(1.0), 2**63 - 1, 1)
        db.execute("INSERT INTO last_values (vin, path, value, ts_ms, seq) VALUES (?, ?, ?, ?, ?)", row)
    [pinned] = store.last_values(VIN)
    assert pinned.timestamp.year == 9999
    assert "path=Vehicle.Speed" in _cli(config, capsys, "last", VIN)
    _batch(ingest, store, vehicle_box, (RECORDS, seal_record(vehicle_box, VIN, 2, _speed(clock, 42.0))))
    assert store.last_value(VIN, "Vehicle.Speed") == 42.0


# -- protocol strictness ------------------------------------------------------------------------------------


def test_unknown_kind_is_stored_as_sent(ingest, store, vehicle_box, clock, config, capsys) -> None:
    """docs/protocol.md: unknown kinds are stored as they are, so a newer agent's records are not lost."""
    content = {"vin": VIN, "seq": 1, "kind": "diagnostic", "ts": to_millis(clock.now()), "body": {"dtc": "P0420"}}
    assert _batch(ingest, store, vehicle_box, (RECORDS, _sealed(vehicle_box, content))) == {1}
    [record] = store.records(VIN)
    assert (record.kind, record.body) == ("diagnostic", {"dtc": "P0420"})
    assert store.last_values(VIN) == []
    assert '"kind": "diagnostic"' in _cli(config, capsys, "records", VIN, "--json")


def test_a_record_holding_any_cbor_value_prints(ingest, store, vehicle_box, clock, config, capsys) -> None:
    """A body is the vehicle's to fill; `backend-stub records` prints whatever it holds, both ways."""
    body = {"huge": BIGNUM, "keys": {1: "one", BIGNUM: "big"}, "raw": b"\x00\xff", "nan": float("nan")}
    record = Record(kind=RecordKind.EVENT, created=clock.now(), body=body)
    assert _batch(ingest, store, vehicle_box, (RECORDS, seal_record(vehicle_box, VIN, 1, record))) == {1}
    [printed] = json.loads(_cli(config, capsys, "records", VIN, "--json"))
    assert printed["body"]["huge"] == BIGNUM_SHOWN
    assert printed["body"]["keys"] == {"1": "one", BIGNUM_SHOWN: "big"}
    assert printed["body"]["raw"] == "00ff"
    assert BIGNUM_SHOWN in _cli(config, capsys, "records", VIN)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (cbor2.dumps({"online": True, "ts": 2**200, "agent": "x"}), None),
        (cbor2.dumps({"online": True, "ts": -(2**64) - 1}), None),
        (cbor2.dumps({"online": True, "ts": float("inf")}), None),
        (cbor2.dumps({"online": True}) + b"\x00", "1 byte(s) after the CBOR item"),
        (b"\xa2\x66online\xf5\x66online\xf4", "Duplicate map key: 'online'"),
        (cbor2.dumps({"online": 1}), "boolean 'online'"),
        (cbor2.dumps({"online": True, "pad": BIGNUM}), "oversize status"),
    ],
    ids=["bignum-ts", "negative-bignum-ts", "inf-ts", "trailing-bytes", "duplicate-key", "int-online", "oversize"],
)
def test_a_status_with_odd_fields_is_taken_or_rejected_never_a_crash(
    ingest, store, vehicle_box, payload: bytes, reason: str | None
) -> None:
    _batch(ingest, store, vehicle_box, (STATUS, payload))
    if reason is None:
        assert store.online(VIN) is True
        assert store.rejections() == []
    else:
        assert store.online(VIN) is None
        [rejection] = store.rejections(VIN)
        assert reason in rejection.reason


# -- the database failing -----------------------------------------------------------------------------------


_DEFERRED = """
CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
"""


def test_a_failed_commit_is_rolled_back_and_the_next_transaction_works(tmp_path: Path) -> None:
    """SQLite keeps the transaction open when COMMIT fails; the connection must not stay inside it."""
    db = open_database(tmp_path / "db.sqlite3", _DEFERRED)
    db.execute("PRAGMA foreign_keys=ON")  # a deferred constraint is checked at COMMIT: a COMMIT that fails
    with pytest.raises(DatabaseError, match="commit failed, nothing of the transaction was stored"), transaction(db):
        db.execute("INSERT INTO child VALUES (42)")
    assert not db.in_transaction
    with transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1)")
    assert db.execute("SELECT count(*) FROM child").fetchone() == (1,)
    db.close()


class _Publisher:
    """What `IngestService._flush` needs of a client: it records the acks published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload))


async def test_a_full_database_loses_the_batch_not_the_service(ingest, store, vehicle_box, clock) -> None:
    """SQLITE_FULL: nothing of the batch is stored, nothing acknowledged (the car resends), and the
    next batch after space came back is stored as usual."""
    service = IngestService(ingest, store, BrokerConfig())
    client = _Publisher()
    big = {f"Vehicle.Signal{i}": {"v": "x" * 200, "t": to_millis(clock.now())} for i in range(100)}
    batch = [(RECORDS, seal_record(vehicle_box, VIN, seq, _telemetry(clock, big))) for seq in (1, 2, 3)]
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    await service._flush(client, batch)  # type: ignore[arg-type]
    assert client.published == []
    assert store.seqs(VIN) == []
    store._db.execute("PRAGMA max_page_count=1073741823")
    await service._flush(client, batch)  # type: ignore[arg-type]
    [(_, ack)] = client.published
    assert open_ack(vehicle_box, ack, vin=VIN).seqs == {1, 2, 3}
    assert store.seqs(VIN) == [1, 2, 3]


# -- fuzzing ------------------------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**64) - 1, MAX_MILLIS, MAX_MILLIS + 1])
    | st.integers(min_value=4300, max_value=6000).map(lambda digits: 10**digits)  # hypothesis cannot repr them
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)
_SIGNAL = st.fixed_dictionaries({}, optional={"v": _VALUES, "t": _SCALARS, "q": _VALUES})
_CONTENT = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["telemetry", "event", "ecall", "x" * 33]) | st.text(max_size=40) | _SCALARS,
        "ts": _SCALARS,
        "body": st.fixed_dictionaries({"signals": st.dictionaries(st.text(max_size=8) | _SCALARS, _SIGNAL, max_size=4)})
        | _VALUES,
    }
)


@settings(max_examples=200, deadline=None)
@given(contents=st.lists(_CONTENT, min_size=1, max_size=4), raw=st.lists(_VALUES | st.binary(), max_size=3))
def test_fuzzed_messages_are_stored_or_rejected_one_each_and_everything_reads_back(
    contents: list[dict[str, Any]], raw: list[Any]
) -> None:
    vehicle, backend = PrivateKey.generate(), PrivateKey.generate()
    box = Box(vehicle, backend.public_key)
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "backend.toml"
        config.write_text('database = "backend.sqlite3"\n\n[keys]\nprivate_key = "backend.key"\n')
        store = BackendStore(Path(directory) / "backend.sqlite3")
        try:
            store.enroll(VIN, bytes(vehicle.public_key), clock.now())
            ingest = Ingest(store, backend, clock, max_payload_bytes=64 * 1024)
            messages = [(RECORDS, _sealed(box, {"vin": VIN, "seq": seq, **c})) for seq, c in enumerate(contents, 1)]
            payloads = [item if isinstance(item, bytes) else cbor2.dumps(item) for item in raw]
            messages += [(topic, payload) for payload in payloads for topic in (RECORDS, STATUS)]
            with store.transaction():
                for topic, payload in messages:
                    ingest.handle(topic, payload)
            outcomes = ingest.stats.stored + ingest.stats.rejected
            assert outcomes == len(messages) - sum(1 for topic, p in messages if topic == STATUS and p == b"")
            assert len(store.seqs(VIN)) == ingest.stats.stored
            store.last_values(VIN)
            store.records(VIN)
            for command in (["last", VIN], ["records", VIN], ["records", VIN, "--json"], ["rejections"]):
                assert backend_cli([*command, "--config", str(config)]) == 0
        finally:
            store.close()


# -- against a real Mosquitto ----------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_attacks_with_one_cars_credentials_leave_the_backend_serving_the_others(
    tmp_path: Path, vehicle_key: PrivateKey, backend_key: PrivateKey, capsys
) -> None:
    """Vehicle A's own credentials on A's own topic (all the documented ACL allows) against the real
    IngestService: each attack is one rejection, and vehicle B's records all get stored and acked."""
    require_mosquitto()
    passwords = {VIN: "a-secret", OTHER_VIN: "b-secret", "backend-stub": "backend-secret"}
    broker = MosquittoBroker(tmp_path / "mosquitto", users=passwords, acl_per_vehicle=True)
    other_key = PrivateKey.generate()
    box_a, box_b = Box(vehicle_key, backend_key.public_key), Box(other_key, backend_key.public_key)
    clock = SystemClock()
    store = BackendStore(tmp_path / "backend.sqlite3")
    store.enroll(VIN, bytes(vehicle_key.public_key), clock.now())
    store.enroll(OTHER_VIN, bytes(other_key.public_key), clock.now())
    ingest = Ingest(store, backend_key, clock, max_payload_bytes=64 * 1024)
    # The backend may have a listener of its own (client ids bound to usernames for the cars only).
    backend_port = urlsplit(getattr(broker, "backend_url", broker.url)).port
    assert backend_port is not None
    backend_broker = BrokerConfig(port=backend_port, username="backend-stub", password="backend-secret")
    service = IngestService(ingest, store, backend_broker)
    now = to_millis(clock.now())
    attacks = [
        cbor2.dumps({"v": BIGNUM, "vin": VIN, "seq": 1, "nonce": bytes(24), "box": bytes(1000)}),
        cbor2.dumps({"v": 1, "vin": VIN, "seq": BIGNUM, "nonce": bytes(24), "box": bytes(1000)}),
        _sealed(box_a, {"vin": VIN, "seq": 1, "kind": "telemetry", "ts": 10**15, "body": {}}),
        _sealed(box_a, {"vin": VIN, "seq": 2**63, "kind": "telemetry", "ts": now, "body": {}}),
        _sealed(
            box_a,
            {"vin": VIN, "seq": 2, "kind": "telemetry", "ts": now, "body": {"signals": {"S": {"v": 1, "t": 2**63}}}},
        ),
    ]
    acked_b: set[int] = set()
    b_records = 60
    async with broker:
        task = asyncio.create_task(service.run(), name="ingest-under-attack")
        try:
            await asyncio.wait_for(service.connected.wait(), 10)
            async with (
                aiomqtt.Client("127.0.0.1", broker.port, identifier="car-a", username=VIN, password="a-secret") as a,
                aiomqtt.Client(
                    "127.0.0.1", broker.port, identifier="car-b", username=OTHER_VIN, password="b-secret"
                ) as b,
            ):
                await b.subscribe(f"vehicles/{OTHER_VIN}/down/ack", qos=1)

                async def collect_acks() -> None:
                    async for message in b.messages:
                        assert isinstance(message.payload, bytes)
                        acked_b.update(open_ack(box_b, message.payload, vin=OTHER_VIN).seqs)

                acks = asyncio.create_task(collect_acks())
                for seq in range(1, b_records + 1):
                    record = Record(
                        kind=RecordKind.TELEMETRY,
                        created=clock.now(),
                        body={"signals": {"Vehicle.Speed": {"v": float(seq), "t": to_millis(clock.now())}}},
                    )
                    await b.publish(OTHER_RECORDS, seal_record(box_b, OTHER_VIN, seq, record), qos=1)
                    if seq % 10 == 0 and attacks:
                        await a.publish(RECORDS, attacks.pop(0), qos=1)
                    await asyncio.sleep(0.005)
                await eventually(lambda: len(acked_b) == b_records, what="every record of vehicle B acknowledged")
                acks.cancel()
            await eventually(lambda: len(store.rejections(VIN)) == 5, what="one rejection per attack")
            assert not task.done()  # the service is still serving
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert store.seqs(OTHER_VIN) == list(range(1, b_records + 1))
    assert store.last_value(OTHER_VIN, "Vehicle.Speed") == float(b_records)
    reasons = [r.reason for r in store.rejections(VIN)]
    assert f"version {BIGNUM_SHOWN}" in reasons[0]
    assert f"'seq' is {BIGNUM_SHOWN}" in reasons[1]
    assert "'ts' is 1000000000000000, outside" in reasons[2]
    assert "'seq' is 9223372036854775808, outside" in reasons[3]
    assert "record seq 2 stored, but not taken as last values: signal 'S'" in reasons[4]
    assert store.seqs(VIN) == [2]
    store.close()
