"""Who may read what on the machine (issue 10, item 14).

The backend's database holds every vehicle's decrypted positions and was created 0644; a broker
password in a 0644 `agent.toml` was accepted silently, though a key file in the same case is refused.
Databases (and their -wal/-shm files) are created 0600 in a 0700 directory whatever the umask, and a
config file holding a password is refused like a key file, by the same check and with the same fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.public import Box

from backend_stub.config import load_backend_config
from backend_stub.errors import BackendConfigError
from backend_stub.store import BackendStore
from tcu.clock import ManualClock
from tcu.config import QueueConfig, load_agent_config
from tcu.errors import ConfigError
from tcu.uplink.outbox import Outbox
from telematics_wire.envelope import seal_record
from telematics_wire.errors import KeyFileError
from telematics_wire.keys import load_private_key, write_box_keypair
from telematics_wire.private_files import private_database
from telematics_wire.records import Record, RecordKind
from tests.conftest import VIN

AGENT = f"""
vin = "{VIN}"
data_dir = "data"
[ecall]
legal_ecall = false
[keys]
vehicle_private_key = "keys/v.key"
backend_public_key = "keys/b.pub"
[broker]
username = "{VIN}"
"""
BACKEND = """
database = "backend.sqlite3"
[keys]
private_key = "keys/backend.x25519.key"
[broker]
username = "backend-stub"
"""


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """A login shell's umask: what made the files 0644 before."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_files(database: Path) -> dict[str, int]:
    """The database and whichever of its -wal, -shm and -journal files exist, with their modes."""
    names = {database.name + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    return {p.name: mode(p) for p in database.parent.iterdir() if p.name in names}


def test_the_backend_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "new-dir" / "backend.sqlite3"
    store = BackendStore(database)
    try:
        store.enroll(VIN, bytes(32), ManualClock().now())  # a write: the -wal and -shm exist now
        files = sqlite_files(database)
        assert set(files) == {"backend.sqlite3", "backend.sqlite3-wal", "backend.sqlite3-shm"}
        assert set(files.values()) == {0o600}, files
        assert mode(database.parent) == 0o700, "the data directory the backend created"
    finally:
        store.close()


def test_an_existing_readable_backend_database_is_narrowed_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o755)  # the operator's folder, holding the database among other things
    database = tmp_path / "backend.sqlite3"
    BackendStore(database).close()
    # Another process (the CLI) has it open: its -wal and -shm exist too, all as an older version left them.
    with contextlib.closing(sqlite3.connect(database)) as holder:
        holder.execute("PRAGMA user_version = 1")
        assert set(sqlite_files(database)) == {"backend.sqlite3", "backend.sqlite3-wal", "backend.sqlite3-shm"}
        for path in tmp_path.iterdir():
            path.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="telematics_wire.private_files"):
            store = BackendStore(database)
        try:
            assert set(sqlite_files(database).values()) == {0o600}
            for name in sqlite_files(database):
                assert f"{tmp_path / name} was accessible by group/others (mode 0644); narrowed" in caplog.text
            assert mode(tmp_path) == 0o755, "a directory the backend did not create is left alone"
        finally:
            store.close()


async def test_the_agents_queue_and_data_directory_are_owner_only(tmp_path: Path, vehicle_box: Box) -> None:
    data_dir = tmp_path / "vehicles" / VIN
    clock = ManualClock()
    async with Outbox(
        data_dir / "queue.sqlite3",
        sealer=lambda seq, record, epoch: seal_record(vehicle_box, VIN, seq, record, epoch=epoch),
        clock=clock,
        config=QueueConfig(),
        max_envelope_bytes=64 * 1024,
    ) as outbox:
        await outbox.put(Record(kind=RecordKind.EVENT, created=clock.now(), body={"type": "test"}))
        files = sqlite_files(data_dir / "queue.sqlite3")
        assert {"queue.sqlite3", "queue.sqlite3-wal"} <= set(files)
        assert set(files.values()) == {0o600}, files
    assert mode(data_dir) == 0o700


@pytest.mark.parametrize("exposed", [0o644, 0o640, 0o604, 0o660], ids=lambda m: f"{m:04o}")
def test_a_broker_password_others_can_read_is_refused_with_the_fix(tmp_path: Path, exposed: int) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT + 'password = "s3cret"\n')
    path.chmod(exposed)
    with pytest.raises(ConfigError, match=rf"password in {path} .*mode {exposed:04o}.*run: chmod 600 {path}$"):
        load_agent_config(path, env={})
    path.chmod(0o600)
    assert load_agent_config(path, env={}).broker.password == "s3cret"


def test_a_readable_config_without_a_password_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT)
    path.chmod(0o644)
    assert load_agent_config(path, env={}).broker.password is None


def test_the_backends_broker_password_is_guarded_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "backend.toml"
    path.write_text(BACKEND + 'password = "s3cret"\n')
    path.chmod(0o644)
    with pytest.raises(BackendConfigError, match=rf"password in {path} .*run: chmod 600 {path}$"):
        load_backend_config(path, env={})
    path.chmod(0o600)
    assert load_backend_config(path, env={}).broker.password == "s3cret"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_secret_owned_by_another_user_names_the_chown_too(tmp_path: Path) -> None:
    """A config left root:tcu 0640 by an older installer: chmod 600 alone would lock the agent out."""
    path = tmp_path / "agent.toml"
    path.write_text(AGENT + 'password = "s3cret"\n')
    path.chmod(0o640)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match=rf"run: chown root {path} && chmod 600 {path}$"):
        load_agent_config(path, env={})


def test_a_private_key_others_can_read_is_refused_by_the_same_check(tmp_path: Path) -> None:
    private, _ = write_box_keypair(tmp_path, "v")
    private.chmod(0o640)
    with pytest.raises(KeyFileError, match=rf"private key {private} .*mode 0640\); run: chmod 600 {private}$"):
        load_private_key(private)


def test_checking_a_database_keeps_the_locks_of_this_process_s_open_connections(tmp_path: Path) -> None:
    """POSIX locks vanish when a process closes *any* descriptor of the file: the check must not open it.

    A store opened beside another one of the same process (the backend's stores share one database,
    a CLI command opens several) must leave the first connection's lock in place, or another process
    takes the database as unused and deletes its live -wal (sqlite.org/howtocorrupt.html §2.2).
    """
    path = tmp_path / "backend.sqlite3"
    private_database(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock
    holder.execute("INSERT INTO t VALUES (1)")
    private_database(path)  # what the next store of this process does before it connects
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
            "try:\n    db.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError as e:\n    print(e)\n"
            "else:\n    print('got the write lock')\n",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == "database is locked"
    holder.execute("COMMIT")
    holder.close()
