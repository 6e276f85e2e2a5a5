"""The CarData id_token: a JWT (RFC 7519) signed with EdDSA (Ed25519, RFC 8037), and its total verifier.

Why EdDSA and not HS256: the backend already holds an Ed25519 key (`[keys] signing_key`), so there is no
new secret to store; and a signature anyone can check with the public key (`public_jwk`) is what an
OpenID id_token is for — with HS256 every verifier would hold the secret that mints tokens. The JWT key
is derived from the backend key (HMAC-SHA256 over a label), so the key the vehicles pin for COSE
provisioning files never signs a JWT itself.

Verification is total: any string is an `IdTokenClaims` or `Unauthorized`. Exactly one algorithm is
accepted ("EdDSA", from a fixed list of one), so "none", HS256 with the public key as secret and every
other algorithm confusion fail before any key is touched; sizes, base64url alphabet, JSON shape,
duplicate keys, integer ranges (2^64, floats, booleans) and lifetimes are checked before a value is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from backend_stub.cardata.errors import Unauthorized

__all__ = ["ID_TOKEN_TTL_S", "MAX_TOKEN_CHARS", "IdTokenClaims", "IdTokenSigner", "derive_key"]

ID_TOKEN_TTL_S = 3600  # BMW: the id_token (the MQTT password) lives one hour
MAX_TOKEN_CHARS = 4096  # ours are ~400; anything this long is not ours and is refused unparsed
_MAX_CLOCK_SKEW_S = 60  # an iat this far ahead of our clock is refused
_LARGEST_TIME_S = 2**53  # a JSON number a JavaScript client reads exactly; beyond it nothing is a date
_ALGORITHM = "EdDSA"
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")  # base64url without padding (RFC 7515 §2)
_SIGNATURE_BYTES = 64


def derive_key(backend_key: SigningKey, label: str) -> bytes:
    """32 bytes for one purpose (`label`) from the backend's Ed25519 key, so one key never serves two uses."""
    return hmac.new(bytes(backend_key), label.encode("ascii"), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class IdTokenClaims:
    issuer: str
    subject: str  # the gcid
    audience: str  # the client_id
    gcid: str
    issued_at: datetime
    expires: datetime
    token_id: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise Unauthorized("the token is not three base64url segments")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized("the token is not three base64url segments") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # a second "alg" or "aud" must not shadow the one another parser reads
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Unauthorized(f"the token's {what} is not a JSON object") from exc
    if not isinstance(value, dict):
        raise Unauthorized(f"the token's {what} is not a JSON object")
    return value


def _time_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    # bool is an int in Python; floats and 2^64 are not times we ever write.
    if type(value) is not int or not 0 <= value <= _LARGEST_TIME_S:
        raise Unauthorized(f"the token's {name!r} is not a time in seconds")
    return value


def _text_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise Unauthorized(f"the token has no {name!r}")
    return value


class IdTokenSigner:
    """Signs and verifies the id_tokens of one backend (one issuer, one key)."""

    def __init__(self, backend_key: SigningKey, *, issuer: str) -> None:
        self._key = SigningKey(derive_key(backend_key, "cardata id_token EdDSA v1"))
        self._verify_key: VerifyKey = self._key.verify_key
        self.issuer = issuer
        self.key_id = _b64encode(hashlib.sha256(bytes(self._verify_key)).digest()[:12])

    def public_jwk(self) -> dict[str, str]:
        """The verification key as a JWK (RFC 8037 OKP), for a JWKS document."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64encode(bytes(self._verify_key)),
            "kid": self.key_id,
            "alg": _ALGORITHM,
            "use": "sig",
        }

    def sign(self, *, gcid: str, client_id: str, now: datetime) -> tuple[str, datetime]:
        """A fresh id_token for `gcid` and the client, and when it expires."""
        issued = int(now.timestamp())
        expires = issued + ID_TOKEN_TTL_S
        claims = {
            "iss": self.issuer,
            "sub": gcid,
            "aud": client_id,
            "iat": issued,
            "exp": expires,
            "gcid": gcid,
            "jti": secrets.token_urlsafe(12),  # two tokens of the same second differ: the newest one wins
        }
        return self.sign_jwt(claims), datetime.fromtimestamp(expires, UTC)

    def sign_jwt(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """Any claims (and header) as a compact JWS under our key: `sign` uses it, tests forge with it."""
        header = header if header is not None else {"alg": _ALGORITHM, "typ": "JWT", "kid": self.key_id}
        signing_input = f"{_b64encode(_compact(header))}.{_b64encode(_compact(claims))}"
        signature = self._key.sign(signing_input.encode("ascii")).signature
        return f"{signing_input}.{_b64encode(signature)}"

    def verify(self, token: object, *, now: datetime, audience: str | None = None) -> IdTokenClaims:
        """The claims of a valid, unexpired token of ours (for `audience` when given); else `Unauthorized`."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthorized("the token is not one of ours")
        segments = token.split(".")
        if len(segments) != 3:
            raise Unauthorized("the token is not three base64url segments")
        header = _json_object(_b64decode(segments[0]), "header")
        if header.get("alg") != _ALGORITHM or header.get("typ", "JWT") != "JWT" or "crit" in header:
            raise Unauthorized("the token's algorithm is not EdDSA")
        if header.get("kid", self.key_id) != self.key_id:
            raise Unauthorized("the token was signed with another key")
        signature = _b64decode(segments[2])
        if len(signature) != _SIGNATURE_BYTES:
            raise Unauthorized("the token's signature has the wrong size")
        try:
            self._verify_key.verify(f"{segments[0]}.{segments[1]}".encode("ascii"), signature)
        except BadSignatureError as exc:
            raise Unauthorized("the token's signature is not valid") from exc
        return self._claims(_json_object(_b64decode(segments[1]), "claims"), now=now, audience=audience)

    def _claims(self, claims: dict[str, Any], *, now: datetime, audience: str | None) -> IdTokenClaims:
        issued, expires = _time_claim(claims, "iat"), _time_claim(claims, "exp")
        if claims.get("iss") != self.issuer:
            raise Unauthorized("the token was issued by someone else")
        subject, gcid = _text_claim(claims, "sub"), _text_claim(claims, "gcid")
        client_id = _text_claim(claims, "aud")
        if subject != gcid:
            raise Unauthorized("the token's subject is not its gcid")
        if audience is not None and client_id != audience:
            raise Unauthorized("the token was issued to another client")
        if not 0 < expires - issued <= ID_TOKEN_TTL_S:
            raise Unauthorized("the token's lifetime is not one we issue")
        now_s = now.timestamp()
        if issued > now_s + _MAX_CLOCK_SKEW_S:
            raise Unauthorized("the token was issued in the future")
        if now_s >= expires:
            raise Unauthorized("the token has expired")
        return IdTokenClaims(
            issuer=self.issuer,
            subject=subject,
            audience=client_id,
            gcid=gcid,
            issued_at=datetime.fromtimestamp(issued, UTC),
            expires=datetime.fromtimestamp(expires, UTC),
            token_id=str(claims.get("jti", "")),
        )


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")
