"""A PostgreSQL server for benches and tests: Debian's `postgresql` binaries, a throw-away cluster.

`initdb` into a fresh directory, then `postgres` on a free loopback port (its unix socket in that
directory too), trust authentication for one superuser, nothing else listening. Like
`hil.broker.MosquittoBroker`, `async with PostgresServer() as server:` starts and stops it; a plain
`with` does the same for a session-wide pytest fixture, which has no event loop of its own.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to a dedicated user
(`postgres`, which Debian's package creates, else `nobody`), and `initdb`/`postgres` run as that user
through util-linux's `setpriv --reuid --regid --init-groups`, which execs the program (`runuser` stays
its parent and does not pass SIGINT on), so the pid we signal is the server's. Its directory is made
with `mkdtemp` directly under the temporary directory and handed to that user, since pytest's own
temporary directories are root's, 0700. As any other user, both run as that user, no switch at all.

    async with PostgresServer() as server:
        await asyncio.to_thread(server.create_database, "tcu")
        url = server.url("tcu")    # postgresql://tcu@127.0.0.1:PORT/tcu
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from hil.broker import free_port

_LOGGER = logging.getLogger(__name__)

SUPERUSER = "tcu"
READY_WITHIN_S = 30.0
SERVICE_USERS = ("postgres", "nobody")  # who runs the cluster when we are root, in order of preference


def postgres_bin_dir() -> Path | None:
    """Where `initdb` and `postgres` are: `TCU_POSTGRES_BIN`, else Debian's newest, else the PATH."""
    configured = os.environ.get("TCU_POSTGRES_BIN")
    if configured:
        return Path(configured) if (Path(configured) / "postgres").exists() else None
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: _major(path.parent.parent.name)
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("postgres")
    return None if on_path is None or shutil.which("initdb") is None else Path(on_path).parent


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def service_user() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root; None when we are not (we run it ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root, and none of the users {', '.join(SERVICE_USERS)} exists to run postgres")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, on a free loopback port, until stopped.

    `durable=False` turns fsync off: for tests, whose data dies with the directory. A benchmark keeps
    the default, PostgreSQL's own durability (every commit's WAL flushed), to compare fairly with
    SQLite's `synchronous=FULL`."""

    port: int = field(default_factory=free_port)
    durable: bool = True
    settings: dict[str, str] = field(default_factory=dict)  # more `-c name=value` for postgres
    workdir: Path | None = field(default=None, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def url(self, database: str = "postgres", *, options: str = "") -> str:
        """libpq's URL of `database` on this server, as the superuser (no password: trust)."""
        query = f"?options={options}" if options else ""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}{query}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """initdb, start, wait until it accepts connections (blocking: a few seconds at most)."""
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        user = service_user()
        self.workdir = Path(tempfile.mkdtemp(prefix="tcu-postgres-"))
        data = self.workdir / "data"
        if user is not None:
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self._run_as(
            user,
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"],
            "--locale=C",
            "--no-sync",  # the cluster is thrown away; its durability is the server's setting below
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.workdir),
            "fsync": "on" if self.durable else "off",
            "max_connections": "100",
            **self.settings,
        }
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        log = (self.workdir / "postgres.log").open("wb")
        with log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                _as_user(user, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready(bin_dir)
        _LOGGER.info("postgres up on 127.0.0.1:%d (pid %d, as %s)", self.port, self._process.pid, _who(user))

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open transactions roll back), then the directory goes."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def create_database(self, name: str, *, template: str = "template1") -> None:
        """`CREATE DATABASE name TEMPLATE template` (a name made of letters, digits and `_`)."""
        if not name.replace("_", "").isalnum() or not template.replace("_", "").isalnum():
            raise ValueError(f"database names are letters, digits and _: {name!r}, {template!r}")
        self.psql(f"CREATE DATABASE {name} TEMPLATE {template}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql (no driver needed) and return what it printed."""
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None, "started, so found"
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
            capture_output=True,
            check=False,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- helpers ---------------------------------------------------------------------------------

    def _run_as(self, user: pwd.struct_passwd | None, argv: list[str], *more: str) -> None:
        done = subprocess.run(_as_user(user, [*argv, *more]), capture_output=True, check=False)  # noqa: S603
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).decode(errors="replace")[-2000:]
            raise RuntimeError(f"{Path(argv[0]).name} failed as {_who(user)}: {detail}")

    def _wait_ready(self, bin_dir: Path) -> None:
        deadline = time.monotonic() + READY_WITHIN_S
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            if subprocess.run(ready, check=False).returncode == 0:  # noqa: S603 - fixed argv
                return
            time.sleep(0.05)
        log = self.workdir / "postgres.log" if self.workdir is not None else None
        detail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"postgres did not accept connections on port {self.port}: {detail}")


def _as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]


def _who(user: pwd.struct_passwd | None) -> str:
    return "this user" if user is None else user.pw_name
