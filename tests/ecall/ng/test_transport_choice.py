"""Which transport an eCall dial uses (EN 17184): the whole table, the `[ecall]` keys, and the modem's IMS report."""

from __future__ import annotations

import itertools

import pytest

from tcu.ecall.config import EcallConfig, NgConfig
from tcu.ecall.ng.transport import EcallTransport, NetworkOffer, Transport, choose_transport
from tcu.errors import ConfigError
from tcu.sources.modem import parse_cnem, parse_cnems1

NG, CS = Transport.NG, Transport.CS


def expected(configured: EcallTransport, ims: bool, legacy: bool, ng_failed: bool) -> Transport:
    """The rules written out once more, independently of the implementation's branch order."""
    if configured is EcallTransport.CS:
        return CS
    if configured is EcallTransport.NG:
        return NG  # forced: never falls back
    if ims:
        return CS if ng_failed and legacy else NG
    return CS  # 2G/3G only, or nothing at all: the modem's dial, redialled per the rules


TABLE = list(itertools.product(EcallTransport, (False, True), (False, True), (False, True)))


@pytest.mark.parametrize(("configured", "ims", "legacy", "ng_failed"), TABLE)
def test_every_combination_has_one_decision_and_a_reason(
    configured: EcallTransport, ims: bool, legacy: bool, ng_failed: bool
) -> None:
    decision = choose_transport(configured, NetworkOffer(ims_emergency=ims, legacy_cs=legacy), ng_failed=ng_failed)
    assert decision.transport is expected(configured, ims, legacy, ng_failed)
    assert decision.reason


def test_the_named_rules() -> None:
    auto = EcallTransport.AUTO
    lte_only = NetworkOffer(ims_emergency=True, legacy_cs=False)
    legacy_only = NetworkOffer(ims_emergency=False, legacy_cs=True)
    both = NetworkOffer(ims_emergency=True, legacy_cs=True)
    assert choose_transport(auto, lte_only).transport is NG
    assert choose_transport(auto, both).transport is NG, "NG first when the network offers it"
    assert choose_transport(auto, legacy_only).transport is CS
    fallback = choose_transport(auto, both, ng_failed=True)
    assert fallback.transport is CS
    assert "fall-back" in fallback.reason
    assert choose_transport(auto, lte_only, ng_failed=True).transport is NG, "no 2G/3G: NG again"


def test_the_ecall_section_takes_the_transport_and_the_ng_table() -> None:
    config = EcallConfig.from_table(
        {
            "port": "/dev/ttyUSB2",
            "transport": "ng",
            "ng": {"proxy": "10.0.0.5:5070", "local_port": 5080, "rtp_port": 40000},
        }
    )
    assert config.transport is EcallTransport.NG
    assert config.ng == NgConfig(proxy_host="10.0.0.5", proxy_port=5070, local_port=5080, rtp_port=40000)
    defaults = EcallConfig.from_table({"port": "/dev/ttyUSB2"})
    assert defaults.transport is EcallTransport.AUTO
    assert (defaults.ng.proxy_host, defaults.ng.proxy_port, defaults.ng.local_port) == ("127.0.0.1", 5060, 0)
    assert EcallConfig.from_table({"port": "x", "ng": {"proxy": "[::1]:5060"}}).ng.proxy_host == "::1"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"transport": "voip"}, "ecall.transport"),
        ({"transport": 1}, "ecall.transport"),
        ({"ng": {"proxy": "127.0.0.1"}}, "ecall.ng.proxy"),
        ({"ng": {"proxy": "127.0.0.1:99999"}}, "ecall.ng.proxy"),
        ({"ng": {"proxy": ":5060"}}, "ecall.ng.proxy"),
        ({"ng": {"proxy": "127.0.0.1:5060", "local_port": -1}}, "ecall.ng.local_port"),
        ({"ng": {"rtp_port": 70000}}, "ecall.ng.rtp_port"),
        ({"ng": {"registrar": "x"}}, "ecall.ng"),
        ({"ng": "127.0.0.1:5060"}, "ecall.ng"),
    ],
)
def test_a_bad_transport_setting_names_its_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        EcallConfig.from_table({"port": "/dev/ttyUSB2", **table})


@pytest.mark.parametrize(
    ("value", "supported"),
    [("1,0,1", True), ("1,1,0", False), ("0", False), ("", False), ("1,0,9" + "9" * 5000, False), ("1,0,x", False)],
)
def test_cnem_read_says_whether_ims_emergency_calls_are_supported(value: str, supported: bool) -> None:
    assert parse_cnem(value) is supported


@pytest.mark.parametrize(("value", "supported"), [("1", True), ("0", False), ("", False), ("1" * 4000, False)])
def test_cnems1_urc(value: str, supported: bool) -> None:
    assert parse_cnems1(value) is supported
