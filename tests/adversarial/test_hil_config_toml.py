"""The bench writes agent and backend configs from the config dataclasses (hil.config_toml, hil.layout):
what it writes is read back as the same config, and a value TOML would misread is refused by name."""

from __future__ import annotations

import math
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_stub.config import load_backend_config
from hil.config_toml import toml_table
from hil.layout import BenchLayout
from tcu.config import QueueConfig, UplinkConfig, load_agent_config
from tests.conftest import VIN

SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]))  # any string but lone surrogates
)
KEYS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="."), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(KEYS, SCALARS | st.lists(SCALARS, max_size=4), max_size=6))
def test_any_table_of_plain_values_reads_back_as_written(values: dict[str, object]) -> None:
    """Quotes, backslashes, control characters, DEL, non-ASCII, keys with spaces: all read back equal."""
    assert tomllib.loads(toml_table("t", values))["t"] == values  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "nan is not a finite number"),
        (math.inf, "inf is not a finite number"),
        (2**63, "outside TOML's 64-bit integers"),
        (-(2**63) - 1, "outside TOML's 64-bit integers"),
        ("\ud800", "lone surrogate"),
        ({"nested": 1}, "has no TOML form here"),
        (None.__class__, "has no TOML form here"),
    ],
)
def test_a_value_toml_cannot_hold_is_refused_naming_its_key(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"^ecall\.sos_hold_s: .*{reason}"):
        toml_table("ecall", {"sos_hold_s": value})  # type: ignore[dict-item]


def test_a_bool_stays_a_bool_and_a_dotted_key_is_a_sub_table() -> None:
    """True is an int to Python: written as 1 the agent would refuse `legal_ecall`; a scenario's
    "timers.t5_s" is the [ecall.timers] key it means."""
    table = tomllib.loads(toml_table("ecall", {"legal_ecall": True, "timers.t5_s": 30}))["ecall"]
    assert table == {"legal_ecall": True, "timers": {"t5_s": 30}}
    assert table["legal_ecall"] is True


def test_the_benchs_agent_config_reads_back_as_the_dataclasses_it_was_written_from(tmp_path: Path) -> None:
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:18830")
    uplink = UplinkConfig(reconnect_base_s=0.05, reconnect_cap_s=0.5, ack_timeout_s=5.0)
    queue = QueueConfig(max_records=300, max_bytes=65536)
    config = bench.write_agent_config(
        VIN,
        telemetry_interval_s=0.25,
        simulation=False,
        username="car",
        password='p"w\\1',
        keepalive_s=3,
        uplink=uplink,
        queue=queue,
        sources={"can": {"port": "/dev/pts/7", "dbc": ["/x/a b.dbc"]}},
    )
    loaded = load_agent_config(config, env={})
    assert (loaded.uplink, loaded.queue) == (uplink, queue)
    assert (loaded.telemetry.interval_s, loaded.simulation.enabled) == (0.25, False)
    assert (loaded.broker.port, loaded.broker.username, loaded.broker.password) == (18830, "car", 'p"w\\1')
    assert loaded.broker.keepalive_s == 3
    assert loaded.sources == {"can": {"port": "/dev/pts/7", "dbc": ["/x/a b.dbc"]}}
    assert loaded.keys.backend_verify_key == tmp_path / "keys" / "backend.ed25519.pub"


def test_the_benchs_backend_config_reads_back_as_the_dataclass_it_was_written_from(tmp_path: Path) -> None:
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:18830")
    written = replace(
        bench.backend(keepalive_s=3),
        measure_retry_base_s=2.0,
        measure_retry_cap_s=10.0,
        psap_port=40001,
        psap_voice_s=10.0,
        call_centre_port=40002,
    )
    bench.write_backend_config(written, more={"psap": {"voice_s": 7200}})  # a scenario's [psap] wins
    loaded = load_backend_config(bench.backend_config, env={})
    expected = replace(
        written,
        database=tmp_path / "backend.sqlite3",
        private_key=tmp_path / "keys/backend.x25519.key",
        signing_key=tmp_path / "keys/backend.ed25519.key",
        psap_voice_s=7200.0,
    )
    assert loaded == expected
    # [broker] stays the last table: a bench appends keys of its own to it (a CA file).
    assert list(tomllib.loads(bench.backend_config.read_text()))[-1] == "broker"
