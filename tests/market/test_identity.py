"""Firebase ID tokens: the emulator path and the real RS256 path with a key made here."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from market.config import Settings
from market.identity.tokens import FirebaseVerifier, InvalidTokenError
from sandbox.token import mint

PROJECT = "spartan-test"


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signing() -> tuple[rsa.RSAPrivateKey, bytes, rsa.RSAPrivateKey]:
    key, cert = _key_and_cert()
    other, _ = _key_and_cert()
    return key, cert, other


@pytest.fixture()
def real_verifier(
    settings: Settings, signing, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FirebaseVerifier]:
    """A verifier in production mode whose Google certificate fetch returns our certificate."""
    _, cert, _ = signing
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST")
    import google.oauth2.id_token as google_id_token

    monkeypatch.setattr(google_id_token, "_fetch_certs", lambda request, url: {"kid-1": cert})
    verifier = FirebaseVerifier(
        replace(settings, firebase_auth_emulator_host=None, firebase_project_id=PROJECT),
        name=f"rs256-{uuid.uuid4().hex[:6]}",
    )
    yield verifier
    verifier.close()


def _signed(key: rsa.RSAPrivateKey, *, kid: str = "kid-1", **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "alice",
        "iat": now - 10,
        "auth_time": now - 10,
        "exp": now + 3600,
        "email": "alice@example.com",
        "admin": True,
        **overrides,
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


def test_a_valid_rs256_token_is_accepted(real_verifier, signing):
    identity = real_verifier.verify(_signed(signing[0]))
    assert identity.uid == "alice"
    assert identity.email == "alice@example.com"
    assert identity.is_admin is True


@pytest.mark.parametrize(
    "case",
    ["expired", "wrong audience", "wrong key", "unknown kid", "unsigned", "malformed", "missing"],
)
def test_bad_rs256_tokens_are_refused(real_verifier, signing, case):
    key, _, other = signing
    token = {
        "expired": lambda: _signed(key, exp=int(time.time()) - 60, iat=int(time.time()) - 7200),
        "wrong audience": lambda: _signed(key, aud="another-project"),
        "wrong key": lambda: _signed(other),
        "unknown kid": lambda: _signed(key, kid="kid-404"),
        "unsigned": lambda: mint("alice", project_id=PROJECT),
        "malformed": lambda: "not.a.jwt",
        "missing": lambda: "",
    }[case]()
    with pytest.raises(InvalidTokenError):
        real_verifier.verify(token)


def test_emulator_tokens_are_accepted_in_test_mode(app):
    verifier = app.extensions["spartan.verifier"]
    identity = verifier.verify(mint("bob", project_id="spartan-test", email="bob@example.com"))
    assert (identity.uid, identity.email, identity.is_admin) == ("bob", "bob@example.com", False)
    assert verifier.verify(mint("root", project_id="spartan-test", admin=True)).is_admin


def test_expired_emulator_tokens_are_refused_too(app):
    verifier = app.extensions["spartan.verifier"]
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(mint("bob", project_id="spartan-test", now=time.time() - 7200))
    with pytest.raises(InvalidTokenError):
        verifier.verify(mint("bob", project_id="another-project"))


def test_a_token_is_verified_once_per_process_until_it_expires(real_verifier, signing):
    import firebase_admin.auth

    calls = []
    verify = firebase_admin.auth.verify_id_token

    def counted(token, **kwargs):
        calls.append(token)
        return verify(token, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(firebase_admin.auth, "verify_id_token", counted)
        token = _signed(signing[0])
        assert real_verifier.verify(token) == real_verifier.verify(token)
        assert len(calls) == 1  # the second answer is the first, remembered
        # A refused token is never remembered: each try is verified (and refused) again.
        bad = _signed(signing[2])
        for _ in range(2):
            with pytest.raises(InvalidTokenError):
                real_verifier.verify(bad)
        assert len(calls) == 3


def test_a_remembered_token_is_refused_once_it_expires(app):
    from tests.support.poll import wait_for

    verifier = app.extensions["spartan.verifier"]
    token = mint("brief", project_id="spartan-test", expires_in=1)
    expires_at = verifier.verify(token).expires_at
    wait_for(lambda: time.time() > expires_at.timestamp(), timeout=5, what="the token's expiry")
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(token)
