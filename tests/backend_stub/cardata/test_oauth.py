"""The device authorization grant with PKCE: what a CarData client written from BMW's description meets."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from backend_stub.cardata.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from backend_stub.cardata.oauth import DeviceCode, DeviceFlow, pkce_challenge
from backend_stub.cardata.oauth_errors import OAuthError
from backend_stub.cardata.tokens import ACCESS_TOKEN_TTL_S, REFRESH_TOKEN_TTL_S, SCOPE_OWNER, TokenSet
from tcu.clock import ManualClock

SCOPE = "authenticate_user openid cardata:streaming:read cardata:api:read"


@dataclass
class Directory:
    """Accounts and clients as CardataStore answers for them."""

    clients: set[str] = field(default_factory=set)
    gcids: dict[str, str] = field(default_factory=dict)

    def gcid_of(self, account: str) -> str:
        return self.gcids.setdefault(account, str(uuid.uuid4()))

    def client(self, client_id: str) -> object | None:
        return client_id if client_id in self.clients else None


@dataclass
class Setup:
    flow: DeviceFlow
    clock: ManualClock
    directory: Directory
    client_id: str
    path: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    clock, client_id = ManualClock(), str(uuid.uuid4())
    directory = Directory(clients={client_id})
    path = tmp_path / "backend.sqlite"
    flow = DeviceFlow(
        path,
        clock,
        SigningKey.generate(),
        directory=directory,
        issuer="https://backend.test/gcdm",
        verification_uri="https://backend.test/oneid/link",
    )
    yield Setup(flow, clock, directory, client_id, path)
    flow.close()


def _verifier() -> str:
    return secrets.token_urlsafe(32)


def _start(setup: Setup, verifier: str, scope: str = SCOPE) -> DeviceCode:
    return setup.flow.start(setup.client_id, scope, pkce_challenge(verifier), "S256")


def _refusal(setup: Setup, code: DeviceCode, verifier: str) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        setup.flow.exchange(setup.client_id, code.device_code, verifier)
    return caught.value


def _poll_error(setup: Setup, code: DeviceCode, verifier: str) -> str:
    return _refusal(setup, code, verifier).error


def _signed_in(setup: Setup, scope: str = SCOPE) -> TokenSet:
    verifier = _verifier()
    code = _start(setup, verifier, scope)
    setup.flow.approve(code.user_code, "account-1")
    return setup.flow.exchange(setup.client_id, code.device_code, verifier)


def test_sign_in_yields_bmw_shaped_tokens_that_verify(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    assert set(code.as_response()) == {
        "device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval",
    }  # fmt: skip
    assert code.verification_uri_complete.endswith(f"?user_code={code.user_code}")
    assert _poll_error(setup, code, verifier) == "authorization_pending"
    setup.clock.advance(code.interval)
    approved = setup.flow.approve(code.user_code.lower()[:4] + "-" + code.user_code[4:], "account-1")
    setup.clock.advance(code.interval)
    tokens = setup.flow.exchange(setup.client_id, code.device_code, verifier)

    gcid = setup.directory.gcids["account-1"]
    assert approved.gcid == tokens.gcid == gcid
    body = tokens.as_response()
    assert set(body) == {"gcid", "token_type", "access_token", "refresh_token", "id_token", "scope", "expires_in"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, SCOPE)
    grant = setup.flow.verify_access_token(tokens.access_token)
    assert (grant.gcid, grant.client_id) == (gcid, setup.client_id)
    assert grant.allows("cardata:api:read")
    assert tokens.id_token is not None
    claims = setup.flow.signer.verify(tokens.id_token, now=setup.clock.now(), audience=setup.client_id)
    assert (claims.subject, claims.gcid, claims.audience) == (gcid, gcid, setup.client_id)
    assert claims.expires == tokens.expires


def test_polling_faster_than_the_interval_slows_the_client_down_for_good(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    assert _poll_error(setup, code, verifier) == "authorization_pending"
    setup.clock.advance(code.interval - 1)
    refusal = _refusal(setup, code, verifier)
    assert (refusal.error, refusal.http_status) == ("slow_down", 400)
    setup.clock.advance(code.interval)  # the old interval no longer suffices: it grew by 5 s
    assert _poll_error(setup, code, verifier) == "slow_down"  # and again: now 15 s
    setup.clock.advance(code.interval + 10)
    assert _poll_error(setup, code, verifier) == "authorization_pending"


def test_an_expired_code_answers_expired_token_and_cannot_be_approved(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    setup.clock.advance(code.expires_in)
    refusal = _refusal(setup, code, verifier)
    assert (refusal.error, refusal.http_status) == ("expired_token", 401)
    with pytest.raises(NotFound, match="expired"):
        setup.flow.approve(code.user_code, "account-1")


def test_a_denied_code_answers_access_denied(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    setup.flow.deny(code.user_code)
    refusal = _refusal(setup, code, verifier)
    assert (refusal.error, refusal.http_status) == ("access_denied", 403)
    with pytest.raises(Conflict):
        setup.flow.approve(code.user_code, "account-1")


def test_an_unknown_client_is_refused_at_start_and_at_the_token_endpoint(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    setup.flow.approve(code.user_code, "account-1")
    for client_id in (str(uuid.uuid4()), "", "x" * 10_000):
        with pytest.raises(OAuthError) as caught:
            setup.flow.start(client_id, SCOPE, pkce_challenge(verifier), "S256")
        # BMW's device-code endpoint documents only 400; its token endpoint 401 for invalid_client.
        assert (caught.value.error, caught.value.http_status) == ("invalid_client", 400)
        with pytest.raises(OAuthError) as caught:
            setup.flow.exchange(client_id, code.device_code, verifier)
        assert (caught.value.error, caught.value.http_status) == ("invalid_client", 401)
    # Another registered client cannot redeem this client's code either.
    other = str(uuid.uuid4())
    setup.directory.clients.add(other)
    with pytest.raises(OAuthError, match="invalid_grant"):
        setup.flow.exchange(other, code.device_code, verifier)


def test_a_wrong_pkce_verifier_is_invalid_grant_and_leaves_the_code_to_its_owner(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    setup.flow.approve(code.user_code, "account-1")
    assert _poll_error(setup, code, _verifier()) == "invalid_grant"
    setup.clock.advance(code.interval)
    assert setup.flow.exchange(setup.client_id, code.device_code, verifier).gcid


def test_a_device_code_is_exchanged_once(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    setup.flow.approve(code.user_code, "account-1")
    setup.flow.exchange(setup.client_id, code.device_code, verifier)
    setup.clock.advance(code.interval)
    assert _poll_error(setup, code, verifier) == "invalid_grant"


@pytest.mark.parametrize(
    ("scope", "challenge", "method", "error"),
    [
        ("cardata:api:write", None, "S256", "invalid_scope"),
        (SCOPE, None, "plain", "invalid_request"),
        (SCOPE, "short", "S256", "invalid_request"),
        (SCOPE, "=" * 43, "S256", "invalid_request"),
        ("openid " * 1000, None, "S256", "invalid_scope"),
    ],
)
def test_a_malformed_start_is_refused(setup: Setup, scope: str, challenge: str | None, method: str, error: str) -> None:
    with pytest.raises(OAuthError) as caught:
        setup.flow.start(setup.client_id, scope, challenge or pkce_challenge(_verifier()), method)
    assert caught.value.error == error


def test_no_scope_means_all_and_without_openid_there_is_no_id_token(setup: Setup) -> None:
    assert _signed_in(setup, "").scope == SCOPE
    tokens = _signed_in(setup, "cardata:api:read")
    assert tokens.id_token is None
    assert "id_token" not in tokens.as_response()


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_sign_in(setup: Setup) -> None:
    first = _signed_in(setup)
    setup.clock.advance(ACCESS_TOKEN_TTL_S - 60)
    second = setup.flow.refresh(setup.client_id, first.refresh_token)
    assert second.access_token != first.access_token
    assert second.id_token != first.id_token
    setup.flow.verify_access_token(second.access_token)

    with pytest.raises(OAuthError, match="already used"):  # a thief replays the spent token
        setup.flow.refresh(setup.client_id, first.refresh_token)
    with pytest.raises(Unauthorized, match="revoked"):
        setup.flow.verify_access_token(second.access_token)
    with pytest.raises(OAuthError, match="invalid_grant"):
        setup.flow.refresh(setup.client_id, second.refresh_token)


def test_tokens_expire(setup: Setup) -> None:
    tokens = _signed_in(setup)
    setup.clock.advance(ACCESS_TOKEN_TTL_S)
    with pytest.raises(Unauthorized, match="expired"):
        setup.flow.verify_access_token(tokens.access_token)
    setup.flow.refresh(setup.client_id, tokens.refresh_token)  # the refresh token lives two weeks
    late = _signed_in(setup)
    setup.clock.advance(REFRESH_TOKEN_TTL_S)
    with pytest.raises(OAuthError, match="expired"):
        setup.flow.refresh(setup.client_id, late.refresh_token)


def test_a_refresh_token_of_another_client_is_refused(setup: Setup) -> None:
    tokens = _signed_in(setup)
    other = str(uuid.uuid4())
    setup.directory.clients.add(other)
    with pytest.raises(OAuthError, match="invalid_grant"):
        setup.flow.refresh(other, tokens.refresh_token)
    setup.flow.refresh(setup.client_id, tokens.refresh_token)  # the refusal did not spend it


def test_revoke_ends_the_owners_tokens_at_once(setup: Setup) -> None:
    tokens = _signed_in(setup)
    assert setup.flow.streaming_expiries() == {tokens.gcid: tokens.expires}
    assert setup.flow.revoke(tokens.gcid, reason="owner change") == 1
    with pytest.raises(Unauthorized):
        setup.flow.verify_access_token(tokens.access_token)
    with pytest.raises(OAuthError):
        setup.flow.refresh(setup.client_id, tokens.refresh_token)
    assert setup.flow.streaming_expiries() == {}


@dataclass
class Listener:
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def tokens_issued(self, tokens: TokenSet) -> None:
        self.issued.append(tokens.access_token)

    def tokens_revoked(self, gcid: str) -> None:
        self.revoked.append(gcid)

    async def applied(self, gcid: str) -> None:
        pass


def test_the_listener_hears_of_every_issue_and_revocation(setup: Setup) -> None:
    listener = Listener()
    setup.flow.listener = listener
    first = _signed_in(setup)
    second = setup.flow.refresh(setup.client_id, first.refresh_token)
    assert listener.issued == [first.access_token, second.access_token]
    with pytest.raises(OAuthError):
        setup.flow.refresh(setup.client_id, first.refresh_token)  # reuse: the sign-in is revoked
    assert listener.revoked == [first.gcid]
    setup.flow.revoke(first.gcid, reason="owner change")
    assert listener.revoked == [first.gcid, first.gcid]
    assert len(listener.issued) == 2  # refusals issue nothing


def test_codes_and_tokens_are_not_in_the_database_file(setup: Setup) -> None:
    verifier = _verifier()
    code = _start(setup, verifier)
    pending = _start(setup, _verifier())
    setup.flow.approve(code.user_code, "account-1")
    tokens = setup.flow.exchange(setup.client_id, code.device_code, verifier)
    setup.flow.close()
    stored = b"".join(path.read_bytes() for path in setup.path.parent.glob("backend.sqlite*"))
    secrets_handed_out = [code.device_code, code.user_code, pending.device_code, pending.user_code]
    secrets_handed_out += [tokens.access_token, tokens.refresh_token, str(tokens.id_token)]
    for secret in secrets_handed_out:
        assert secret.encode() not in stored


@pytest.mark.parametrize("user_code", ["", "ABC", "AAAAAAAA", "BCDFGHJ\u00e9", "B" * 10_000])
def test_approving_a_malformed_user_code_is_a_bad_request(setup: Setup, user_code: str) -> None:
    with pytest.raises(BadRequest):
        setup.flow.approve(user_code, "account-1")


def test_approving_an_unknown_user_code_is_not_found(setup: Setup) -> None:
    with pytest.raises(NotFound):
        setup.flow.deny("BCDFGHJK")


@settings(max_examples=150, deadline=None)
@given(token=st.one_of(st.text(max_size=300), st.binary().map(repr), st.none(), st.integers()))
def test_verify_access_token_is_total(tmp_path_factory: pytest.TempPathFactory, token: object) -> None:
    flow = _shared_flow(tmp_path_factory)
    with pytest.raises(Unauthorized):
        flow.verify_access_token(token)


@settings(max_examples=100, deadline=None)
@given(device_code=st.text(max_size=300), verifier=st.text(max_size=200))
def test_exchange_is_total(tmp_path_factory: pytest.TempPathFactory, device_code: str, verifier: str) -> None:
    flow = _shared_flow(tmp_path_factory)
    with pytest.raises(OAuthError):
        flow.exchange(_FUZZ_CLIENT, device_code, verifier)


_FUZZ_CLIENT = str(uuid.uuid4())
_FLOWS: dict[int, DeviceFlow] = {}


def _shared_flow(factory: pytest.TempPathFactory) -> DeviceFlow:
    """One flow per test session for the hypothesis tests (a function-scoped fixture is refused there)."""
    key = id(factory)
    if key not in _FLOWS:
        _FLOWS[key] = DeviceFlow(
            factory.mktemp("fuzz") / "backend.sqlite",
            ManualClock(),
            SigningKey.generate(),
            directory=Directory(clients={_FUZZ_CLIENT}),
            issuer="https://backend.test/gcdm",
            verification_uri="https://backend.test/oneid/link",
        )
    return _FLOWS[key]


def test_the_owner_scope_is_granted_only_when_asked_for_and_approved_as_the_owners_own(setup: Setup) -> None:
    assert _signed_in(setup, "").scope == SCOPE, "no scope asked means BMW's four, never cardata:owner"
    verifier = _verifier()
    code = _start(setup, verifier, "openid cardata:owner")
    setup.flow.approve(code.user_code, "account-1", owner=True)
    mine = setup.flow.exchange(setup.client_id, code.device_code, verifier)
    assert setup.flow.verify_access_token(mine.access_token).allows(SCOPE_OWNER)
    assert not _signed_in(setup, f"{SCOPE} {SCOPE_OWNER}").scope.split().count(SCOPE_OWNER)
    alone = _start(setup, _verifier(), SCOPE_OWNER)
    with pytest.raises(Forbidden):  # nothing would be left to grant a third party
        setup.flow.approve(alone.user_code, "account-1")
    assert setup.flow.approve(alone.user_code, "account-1", owner=True).scope == SCOPE_OWNER


def test_after_a_restart_the_newest_streaming_sign_in_holds_the_login(setup: Setup) -> None:
    first = _signed_in(setup)
    setup.clock.advance(10)
    other = str(uuid.uuid4())
    setup.directory.clients.add(other)
    verifier = _verifier()
    code = setup.flow.start(other, SCOPE, pkce_challenge(verifier), "S256")
    setup.flow.approve(code.user_code, "account-1")
    newest = setup.flow.exchange(other, code.device_code, verifier)
    assert setup.flow.streaming_holders() == {first.gcid: other}
    assert setup.flow.streaming_expiries() == {first.gcid: newest.expires}
    setup.flow.revoke(first.gcid, reason="owner change")
    assert setup.flow.streaming_holders() == {}
