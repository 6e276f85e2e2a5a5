"""The id_token (the MQTT password) verifies only as issued: any other string is `Unauthorized`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.cardata.errors import Unauthorized
from backend_stub.cardata.id_token import ID_TOKEN_TTL_S, MAX_TOKEN_CHARS, IdTokenSigner
from backend_stub.cardata.tokens import Grant, TokenSet

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
ISSUER = "https://backend.test/gcdm"
GCID = "aa111192-d570-4d3d-8835-656ee00edcd7"
CLIENT = "0f7c2d55-2c1e-4a53-9d3e-0d0c8f2c7f11"
BACKEND_KEY = SigningKey(bytes(range(32)))
SIGNER = IdTokenSigner(BACKEND_KEY, issuer=ISSUER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    issued = int(NOW.timestamp())
    claims = {"iss": ISSUER, "sub": GCID, "aud": CLIENT, "iat": issued, "exp": issued + 3600, "gcid": GCID}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _verify(token: object, audience: str | None = CLIENT, now: datetime = NOW) -> object:
    return SIGNER.verify(token, now=now, audience=audience)


def test_an_issued_token_verifies_with_its_claims() -> None:
    token, expires = SIGNER.sign(gcid=GCID, client_id=CLIENT, now=NOW)
    claims = SIGNER.verify(token, now=NOW + timedelta(seconds=ID_TOKEN_TTL_S - 1), audience=CLIENT)
    assert (claims.issuer, claims.subject, claims.gcid, claims.audience) == (ISSUER, GCID, GCID, CLIENT)
    assert claims.issued_at == NOW
    assert claims.expires == expires == NOW + timedelta(hours=1)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"


def test_the_public_jwk_verifies_the_signature_without_the_backend_key() -> None:
    from nacl.signing import VerifyKey  # noqa: PLC0415 - what a third party would do

    token, _ = SIGNER.sign(gcid=GCID, client_id=CLIENT, now=NOW)
    head, body, signature = token.split(".")
    jwk = SIGNER.public_jwk()
    VerifyKey(base64.urlsafe_b64decode(jwk["x"] + "=")).verify(
        f"{head}.{body}".encode(), base64.urlsafe_b64decode(signature + "==")
    )
    assert jwk["x"] != _b64(bytes(BACKEND_KEY.verify_key))  # a key of its own, derived from the backend's


def test_expiry_audience_and_issuer_are_enforced() -> None:
    token, _ = SIGNER.sign(gcid=GCID, client_id=CLIENT, now=NOW)
    with pytest.raises(Unauthorized, match="expired"):
        _verify(token, now=NOW + timedelta(seconds=ID_TOKEN_TTL_S))
    with pytest.raises(Unauthorized, match="another client"):
        _verify(token, audience="someone-else")
    other_backend = IdTokenSigner(BACKEND_KEY, issuer="https://elsewhere.test")
    with pytest.raises(Unauthorized):
        other_backend.verify(token, now=NOW)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


def _hs256_with_public_key(claims: dict[str, Any]) -> str:
    """The classic algorithm confusion: HMAC keyed with the verifier's public key."""
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    public = base64.urlsafe_b64decode(SIGNER.public_jwk()["x"] + "=")
    return f"{signing_input}.{_b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"


_NAN_HEADER = b'{"alg": NaN}'
FORGERIES = {
    "garbage": "not a token",
    "empty": "",
    "two segments": "a.b",
    "bad base64": "ab$c.def.ghi",
    "padded base64": "eyJ=.eyJ=.AAA=",
    "one char too many": "a.b.c" + "d" * 5,
    "alg none": _unsigned({"alg": "none"}, _claims()),
    "alg none lower case": _unsigned({"alg": "NONE", "typ": "JWT"}, _claims()),
    "HS256 with the public key": _hs256_with_public_key(_claims()),
    "RS256": _unsigned({"alg": "RS256"}, _claims(), b"\0" * 256),
    "header not an object": f"{_b64(b'[1]')}.{_b64(b'{}')}.{_b64(bytes(64))}",
    "header not JSON": f"{_b64(b'{')}.{_b64(b'{}')}.{_b64(bytes(64))}",
    "header with NaN": f"{_b64(_NAN_HEADER)}.{_b64(b'{}')}.{_b64(bytes(64))}",
    "header nested deeply": f"{_b64(b'[' * 3000)}.{_b64(b'{}')}.{_b64(bytes(64))}",
    "header not UTF-8": f"{_b64(bytes([0xFF, 0xFE]))}.{_b64(b'{}')}.{_b64(bytes(64))}",
    "zero signature": _unsigned({"alg": "EdDSA", "typ": "JWT"}, _claims(), bytes(64)),
    "short signature": _unsigned({"alg": "EdDSA"}, _claims(), bytes(63)),
    "huge": "a" * (MAX_TOKEN_CHARS + 1),
    "huge dotted": ".".join(["a" * 100_000] * 3),
    "not ASCII": "\u00e9\u00e9.\u00e9.\u00e9",
    "surrogate": "\udcff.a.b",
}


@pytest.mark.parametrize("token", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_or_broken_token_is_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        _verify(token)


SIGNED_BUT_WRONG = {
    "exp 2^64": _claims(exp=2**64),
    "exp far future": _claims(exp=int(NOW.timestamp()) + 10 * 365 * 86400),
    "exp a float": _claims(exp=float(NOW.timestamp()) + 3600.5),
    "exp a boolean": _claims(exp=True),
    "exp a string": _claims(exp="tomorrow"),
    "iat negative": _claims(iat=-1),
    "issued in the future": _claims(iat=int(NOW.timestamp()) + 7200, exp=int(NOW.timestamp()) + 9000),
    "no exp": _claims(exp=None),
    "wrong audience": _claims(aud="0f7c2d55-0000-4a53-9d3e-0d0c8f2c7f11"),
    "audience list": _claims(aud=[CLIENT]),
    "subject not the gcid": _claims(sub="someone"),
    "no gcid": _claims(gcid=None),
    "other issuer": _claims(iss="https://evil.test"),
}


@pytest.mark.parametrize("claims", SIGNED_BUT_WRONG.values(), ids=SIGNED_BUT_WRONG.keys())
def test_a_signed_token_with_claims_we_never_issue_is_unauthorized(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        _verify(SIGNER.sign_jwt(claims))


def test_a_tampered_payload_or_another_key_is_unauthorized() -> None:
    token, _ = SIGNER.sign(gcid=GCID, client_id=CLIENT, now=NOW)
    head, _, signature = token.split(".")
    other_claims = _b64(json.dumps(_claims(sub="x", gcid="x")).encode())
    with pytest.raises(Unauthorized, match="signature"):
        _verify(f"{head}.{other_claims}.{signature}")
    stranger = IdTokenSigner(SigningKey.generate(), issuer=ISSUER)
    with pytest.raises(Unauthorized):
        _verify(stranger.sign_jwt(_claims(), header={"alg": "EdDSA", "typ": "JWT"}))


def test_a_duplicate_header_member_is_refused() -> None:
    # Another JWT library would read the last "alg"; we refuse to guess which one counts.
    header = b'{"alg":"EdDSA","alg":"none"}'
    with pytest.raises(Unauthorized):
        _verify(f"{_b64(header)}.{_b64(json.dumps(_claims()).encode())}.{_b64(bytes(64))}")


_SEGMENT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(_SEGMENT, min_size=3, max_size=3).map(".".join)))
def test_verify_is_total(token: str) -> None:
    with pytest.raises(Unauthorized):
        _verify(token)


def test_token_values_never_show_their_secrets() -> None:
    token, expires = SIGNER.sign(gcid=GCID, client_id=CLIENT, now=NOW)
    tokens = TokenSet(
        gcid=GCID, client_id=CLIENT, access_token="ACCESS", refresh_token="REFRESH", id_token=token,
        scope="openid", expires=expires,
    )  # fmt: skip
    for secret in ("ACCESS", "REFRESH", token):
        assert secret not in repr(tokens)
    assert Grant(gcid=GCID, client_id=CLIENT, scope=frozenset({"openid"}), expires=expires).allows("openid")
