"""Hostile access tokens: every way we know to forge, confuse or crash a JWT verifier.

Plain importable module (no pytest), shared by the verifier tests and the HTTP
API tests, which assert that every token here gets a 401::

    from hostile_tokens import KeyBundle, build_hostile_tokens

    keys = KeyBundle.generate()
    # Trust keys.jwks for `issuer` with algorithms keys.algorithms
    # (EdDSA, ES256, RS256), typ "at+jwt", max_lifetime 24h, leeway <= 30 s.
    for case_id, token in build_hostile_tokens(issuer, audience, keys):
        ...

Each token is built by hand where PyJWT refuses to build it, and is correctly
signed by a trusted key wherever the point is that exactly one property is
wrong, so a verifier that lacks that one rule would accept it. Tokens are
valid for ten minutes from ``now`` (default: the time of the call) in every
other respect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "HOSTILE_CASE_IDS",
    "HostileCase",
    "KeyBundle",
    "b64url",
    "build_hostile_cases",
    "build_hostile_tokens",
    "jwk_for",
    "make_token",
    "mint",
    "sign",
]

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def jwk_for(public_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of a cryptography public key (Ed25519, P-256 or RSA)."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "alg": "EdDSA"}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        point = public_key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": b64url(point.x.to_bytes(32, "big")),
            "y": b64url(point.y.to_bytes(32, "big")),
        }
    elif isinstance(public_key, rsa.RSAPublicKey):
        nums = public_key.public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
            "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")),
        }
    else:
        raise TypeError(f"unsupported key {type(public_key).__name__}")
    return {"kid": kid, "use": "sig", **jwk, **extra}


def sign(key: PrivateKey | bytes | None, signing_input: bytes) -> bytes:
    """Sign as JWS would for the key's type (bytes = HMAC-SHA256 secret, None = no signature)."""
    if key is None:
        return b""
    if isinstance(key, bytes):
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(signing_input)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


def make_token(
    header: Mapping[str, Any] | None,
    payload: Mapping[str, Any] | None,
    key: PrivateKey | bytes | None,
    *,
    raw_header_bytes: bytes | None = None,
    raw_payload_bytes: bytes | None = None,
    signature: bytes | None = None,
) -> str:
    """Build a compact JWS by hand; ``signature`` replaces the computed one."""
    h = b64url(raw_header_bytes if raw_header_bytes is not None else _json(header))
    p = b64url(raw_payload_bytes if raw_payload_bytes is not None else _json(payload))
    sig = signature if signature is not None else sign(key, f"{h}.{p}".encode())
    return f"{h}.{p}.{b64url(sig)}"


def sign_segments(header_segment: str, payload_segment: str, key: PrivateKey | bytes | None) -> str:
    """Sign exactly these (possibly non-canonical) segment strings."""
    sig = sign(key, f"{header_segment}.{payload_segment}".encode())
    return f"{header_segment}.{payload_segment}.{b64url(sig)}"


@dataclass(frozen=True)
class KeyBundle:
    """Signing keys generated at test time, and the JWKS a verifier should trust.

    The JWKS publishes ``ed-1`` (EdDSA), ``ec-1`` (ES256) and ``rsa-1`` (RS256,
    2048 bits), plus keys a correct verifier must ignore: ``ed-enc`` (use
    "enc"), ``rsa-1024`` (too short) and ``oct-1`` (a symmetric key).
    ``attacker`` is never published.
    """

    ed25519: Ed25519PrivateKey
    p256: ec.EllipticCurvePrivateKey
    rsa: RSAPrivateKey
    enc_key: Ed25519PrivateKey
    weak_rsa: RSAPrivateKey
    oct_secret: bytes
    attacker: Ed25519PrivateKey
    jwks: dict[str, Any]

    algorithms: ClassVar[tuple[str, ...]] = ("EdDSA", "ES256", "RS256")
    kids: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"EdDSA": "ed-1", "ES256": "ec-1", "RS256": "rsa-1"}
    )

    @classmethod
    def generate(cls) -> KeyBundle:
        ed = ed25519.Ed25519PrivateKey.generate()
        p256 = ec.generate_private_key(ec.SECP256R1())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        enc = ed25519.Ed25519PrivateKey.generate()
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        secret = b"published-symmetric-secret-0123456789"
        jwks = {
            "keys": [
                jwk_for(ed.public_key(), "ed-1"),
                jwk_for(p256.public_key(), "ec-1"),
                jwk_for(rsa_key.public_key(), "rsa-1"),
                jwk_for(enc.public_key(), "ed-enc", use="enc"),
                jwk_for(weak.public_key(), "rsa-1024"),
                {"kty": "oct", "kid": "oct-1", "alg": "HS256", "use": "sig", "k": b64url(secret)},
            ]
        }
        return cls(ed, p256, rsa_key, enc, weak, secret, ed25519.Ed25519PrivateKey.generate(), jwks)

    def private_key(self, alg: str) -> PrivateKey:
        keys: dict[str, PrivateKey] = {"EdDSA": self.ed25519, "ES256": self.p256, "RS256": self.rsa}
        return keys[alg]


def mint(
    keys: KeyBundle,
    issuer: str,
    audience: str,
    *,
    alg: str = "EdDSA",
    now: int | None = None,
    ttl: int = 600,
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    drop: Iterable[str] = (),
    key: PrivateKey | bytes | None = None,
) -> str:
    """A valid token (unless overridden): ``header``/``claims`` are merged in, ``drop`` removed."""
    now = int(time.time()) if now is None else now
    hdr: dict[str, Any] = {"alg": alg, "typ": "at+jwt", "kid": keys.kids.get(alg, "ed-1")}
    hdr.update(header or {})
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": "user-1",
        "iat": now,
        "exp": now + ttl,
        "jti": f"jti-{now}-{id(hdr)}",
        "scope": "entitlements:check",
        "roles": ["listener"],
        "tid": "tenant-1",
    }
    body.update(claims or {})
    for name in drop:
        hdr.pop(name, None)
        body.pop(name, None)
    return make_token(hdr, body, keys.private_key(alg) if key is None else key)


@dataclass(frozen=True)
class HostileCase:
    """One hostile token and the InvalidTokenError.code our verifier gives it."""

    id: str
    code: str
    token: str


@dataclass(frozen=True)
class _Ctx:
    keys: KeyBundle
    issuer: str
    audience: str
    now: int

    def header(self, alg: str = "EdDSA", **extra: Any) -> dict[str, Any]:
        return {"alg": alg, "typ": "at+jwt", "kid": self.keys.kids.get(alg, "ed-1"), **extra}

    def claims(self, **extra: Any) -> dict[str, Any]:
        now = self.now
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "jti": "jti-hostile",
            "scope": "entitlements:check",
            "roles": ["listener"],
            **extra,
        }

    def raw_claims(self, extra_json: str, *, drop: Iterable[str] = ()) -> bytes:
        """Payload bytes with a hand-written JSON fragment appended (for non-JSON-able values)."""
        claims = self.claims()
        for name in drop:
            del claims[name]
        return _json(claims)[:-1] + b"," + extra_json.encode() + b"}"

    def token(
        self,
        alg: str = "EdDSA",
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
    ) -> str:
        return mint(
            self.keys,
            self.issuer,
            self.audience,
            alg=alg,
            now=self.now,
            header=header,
            claims=claims,
            drop=drop,
        )

    def segments(self) -> tuple[str, str]:
        token = self.token()
        h, p, _ = token.split(".")
        return h, p


Builder = Callable[[_Ctx], str]
_CASES: list[tuple[str, str, Builder]] = []


def _case(case_id: str, code: str, builder: Builder) -> None:
    _CASES.append((case_id, code, builder))


def _with_header(c: _Ctx, name: str, value: object) -> str:
    return c.token(header={name: value})


def _without(c: _Ctx, name: str) -> str:
    return c.token(drop=[name])


def _raw_payload(c: _Ctx, value: object) -> str:
    return make_token(c.header(), None, c.keys.ed25519, raw_payload_bytes=_json(value))


# -- algorithm confusion ---------------------------------------------------------------


def _alg_none(c: _Ctx, spelling: str, signed: bool) -> str:
    return make_token(
        c.header(spelling, kid="ed-1"), c.claims(), c.keys.ed25519 if signed else None
    )


for _spelling in ("none", "None", "NONE", "nOnE"):
    _case(
        f"alg_{_spelling}_empty_sig",
        "bad_algorithm",
        partial(_alg_none, spelling=_spelling, signed=False),
    )
    _case(
        f"alg_{_spelling}_with_sig",
        "bad_algorithm",
        partial(_alg_none, spelling=_spelling, signed=True),
    )
_case("alg_missing", "bad_algorithm", lambda c: c.token(drop=["alg"]))
_case("alg_not_a_string", "bad_algorithm", lambda c: c.token(header={"alg": ["EdDSA"]}))
_case(
    "alg_lowercase_eddsa",
    "bad_algorithm",
    lambda c: make_token(c.header("eddsa", kid="ed-1"), c.claims(), c.keys.ed25519),
)


def _public_forms(c: _Ctx) -> dict[str, bytes]:
    pub = c.keys.rsa.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return {
        "pem": pub.public_bytes(serialization.Encoding.PEM, spki),
        "der": pub.public_bytes(serialization.Encoding.DER, spki),
        "jwk": json.dumps(jwk_for(pub, "rsa-1")).encode(),
        "openssh": pub.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }


def _hmac_with_public_key(c: _Ctx, form: str) -> str:
    return make_token(c.header("HS256", kid="rsa-1"), c.claims(), _public_forms(c)[form])


for _form in ("pem", "der", "jwk", "openssh"):
    # The classic: HMAC keyed with the issuer's public key, which the verifier has.
    _case(
        f"hs256_keyed_with_rsa_public_{_form}",
        "bad_algorithm",
        partial(_hmac_with_public_key, form=_form),
    )
_case(
    "hs256_keyed_with_ed25519_public_pem",
    "bad_algorithm",
    lambda c: make_token(
        c.header("HS256", kid="ed-1"),
        c.claims(),
        c.keys.ed25519.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ),
)
_case(
    "hs256_with_published_oct_key",
    "bad_algorithm",
    lambda c: make_token(c.header("HS256", kid="oct-1"), c.claims(), c.keys.oct_secret),
)
_case(
    "es256_header_on_eddsa_key",
    "bad_algorithm",
    lambda c: make_token(c.header("ES256", kid="ed-1"), c.claims(), c.keys.ed25519),
)
_case(
    "rs256_header_on_ec_key",
    "bad_algorithm",
    lambda c: make_token(c.header("RS256", kid="ec-1"), c.claims(), c.keys.p256),
)
_case(
    "eddsa_header_on_rsa_key",
    "bad_algorithm",
    lambda c: make_token(c.header("EdDSA", kid="rsa-1"), c.claims(), c.keys.rsa),
)
_case(
    "es256_header_on_rsa_key",
    "bad_algorithm",
    lambda c: make_token(c.header("ES256", kid="rsa-1"), c.claims(), c.keys.rsa),
)

# -- signatures --------------------------------------------------------------------------


def _with_signature(token: str, signature: bytes | str) -> str:
    h, p, _ = token.split(".")
    return f"{h}.{p}.{signature if isinstance(signature, str) else b64url(signature)}"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _sig(token: str) -> bytes:
    s = token.split(".")[2]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


_case("signature_stripped", "bad_signature", lambda c: _with_signature(c.token(), ""))
_case(
    "signature_tampered",
    "bad_signature",
    lambda c: _with_signature(c.token(), _flip(_sig(c.token()), 20)),
)
_case(
    "signature_truncated",
    "bad_signature",
    lambda c: _with_signature(c.token(), _sig(c.token())[:-1]),
)
_case(
    "payload_tampered",
    "bad_signature",
    lambda c: ".".join(
        [c.segments()[0], b64url(_json(c.claims(sub="admin"))), c.token().split(".")[2]]
    ),
)
_case(
    "signed_by_attacker_key_with_our_kid",
    "bad_signature",
    lambda c: make_token(c.header(), c.claims(), c.keys.attacker),
)
_case(
    "signature_of_another_token",
    "bad_signature",
    lambda c: _with_signature(c.token(), _sig(c.token(claims={"sub": "someone-else"}))),
)
_case("ecdsa_r_s_zero", "bad_signature", lambda c: _with_signature(c.token("ES256"), bytes(64)))
_case(
    "ecdsa_r_s_equal_n",
    "bad_signature",
    lambda c: _with_signature(c.token("ES256"), P256_ORDER.to_bytes(32, "big") * 2),
)
_case(
    "ecdsa_der_signature",
    "bad_signature",
    lambda c: make_token(
        c.header("ES256"),
        c.claims(),
        None,
        signature=c.keys.p256.sign(
            f"{b64url(_json(c.header('ES256')))}.{b64url(_json(c.claims()))}".encode(),
            ec.ECDSA(hashes.SHA256()),
        ),
    ),
)

# -- key identification -------------------------------------------------------------------

for _kid_id, _kid in (
    ("path_traversal", "../../etc/passwd"),
    ("sql_injection", "' OR 1=1 --"),
    ("unknown", "no-such-key"),
):
    _case(f"kid_{_kid_id}", "unknown_key", partial(_with_header, name="kid", value=_kid))
_case("kid_missing", "unknown_key", lambda c: c.token(drop=["kid"]))
for _kid_id, _bad_kid in (
    ("int", 1),
    ("list", ["ed-1"]),
    ("null", None),
    ("empty", ""),
    ("too_long", "k" * 300),
):
    _case(f"kid_{_kid_id}", "malformed", partial(_with_header, name="kid", value=_bad_kid))
_case(
    "key_published_for_encryption",
    "unknown_key",
    lambda c: make_token(c.header(kid="ed-enc"), c.claims(), c.keys.enc_key),
)
_case(
    "key_rsa_1024_bits",
    "unknown_key",
    lambda c: make_token(c.header("RS256", kid="rsa-1024"), c.claims(), c.keys.weak_rsa),
)

# -- header parameters we must never follow or must not understand -------------------------

_case(
    "header_jku",
    "unsupported_header",
    lambda c: c.token(header={"jku": "https://attacker.example/jwks.json"}),
)
_case(
    "header_x5u",
    "unsupported_header",
    lambda c: c.token(header={"x5u": "https://attacker.example/cert.pem"}),
)
_case(
    "header_jwk_embedded_attacker_key",
    "unsupported_header",
    lambda c: make_token(
        c.header(kid="attacker", jwk=jwk_for(c.keys.attacker.public_key(), "attacker")),
        c.claims(),
        c.keys.attacker,
    ),
)
_case(
    "header_x5c",
    "unsupported_header",
    lambda c: c.token(header={"x5c": [base64.b64encode(b"not really a cert").decode()]}),
)
_case(
    "crit_unknown",
    "unsupported_header",
    lambda c: c.token(header={"crit": ["exp-ext"], "exp-ext": 1}),
)
_case("crit_empty_list", "unsupported_header", lambda c: c.token(header={"crit": []}))
_case("crit_registered_header", "unsupported_header", lambda c: c.token(header={"crit": ["exp"]}))
_case("b64_false", "unsupported_header", lambda c: c.token(header={"b64": False, "crit": ["b64"]}))
_case("b64_false_without_crit", "unsupported_header", lambda c: c.token(header={"b64": False}))
_case("cty_jwt", "unsupported_header", lambda c: c.token(header={"cty": "JWT"}))
_case(
    "nested_jwt_payload",
    "malformed",
    lambda c: make_token(
        c.header(cty="JWT"), None, c.keys.ed25519, raw_payload_bytes=c.token().encode()
    ),
)

# -- time ----------------------------------------------------------------------------------

_case("expired", "expired", lambda c: c.token(claims={"iat": c.now - 3600, "exp": c.now - 600}))
_case("nbf_in_future", "not_yet_valid", lambda c: c.token(claims={"nbf": c.now + 300}))
_case(
    "iat_in_future",
    "not_yet_valid",
    lambda c: c.token(claims={"iat": c.now + 300, "exp": c.now + 900}),
)
_case(
    "lifetime_over_cap",
    "lifetime_exceeded",
    lambda c: c.token(claims={"iat": c.now - 60, "exp": c.now - 60 + 25 * 3600}),
)
_case("exp_before_iat", "bad_claim", lambda c: c.token(claims={"iat": c.now, "exp": c.now - 1}))
_case("exp_string", "bad_claim", lambda c: c.token(claims={"exp": str(c.now + 600)}))
_case("exp_float", "bad_claim", lambda c: c.token(claims={"exp": c.now + 600.5}))
_case("exp_integral_float", "bad_claim", lambda c: c.token(claims={"exp": float(c.now + 600)}))
_case("exp_bool", "bad_claim", lambda c: c.token(claims={"exp": True}))
_case("iat_string", "bad_claim", lambda c: c.token(claims={"iat": str(c.now)}))
_case("nbf_string", "bad_claim", lambda c: c.token(claims={"nbf": str(c.now)}))
_case(
    "exp_infinity_1e999",
    "malformed",
    lambda c: make_token(
        c.header(),
        None,
        c.keys.ed25519,
        raw_payload_bytes=c.raw_claims('"exp":1e999', drop=["exp"]),
    ),
)
_case(
    "exp_nan",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=c.raw_claims('"exp":NaN', drop=["exp"])
    ),
)
_case("exp_huge_integer", "bad_claim", lambda c: c.token(claims={"exp": 10**30}))

# -- required claims and identity -----------------------------------------------------------

for _claim in ("iss", "aud", "sub", "exp", "iat", "jti"):
    _case(f"missing_{_claim}", "missing_claim", partial(_without, name=_claim))
_case("iss_wrong", "bad_issuer", lambda c: c.token(claims={"iss": "https://evil.example"}))
_case("iss_substring", "bad_issuer", lambda c: c.token(claims={"iss": c.issuer[:-1]}))
_case("iss_trailing_slash", "bad_issuer", lambda c: c.token(claims={"iss": c.issuer + "/"}))
_case("iss_uppercase", "bad_issuer", lambda c: c.token(claims={"iss": c.issuer.upper()}))
_case("iss_list", "bad_claim", lambda c: c.token(claims={"iss": [c.issuer]}))
_case("aud_other_string", "bad_audience", lambda c: c.token(claims={"aud": "someone-else"}))
_case("aud_list_without_us", "bad_audience", lambda c: c.token(claims={"aud": ["a", "b"]}))
_case("aud_substring", "bad_audience", lambda c: c.token(claims={"aud": c.audience[:-1]}))
_case("aud_empty_list", "bad_claim", lambda c: c.token(claims={"aud": []}))
_case("aud_list_with_non_string", "bad_claim", lambda c: c.token(claims={"aud": [c.audience, 1]}))
_case("sub_empty", "bad_claim", lambda c: c.token(claims={"sub": ""}))
_case("sub_not_a_string", "bad_claim", lambda c: c.token(claims={"sub": 42}))
_case("jti_too_long", "bad_claim", lambda c: c.token(claims={"jti": "j" * 300}))
_case("roles_not_a_list", "bad_claim", lambda c: c.token(claims={"roles": "admin"}))
_case("roles_with_non_string", "bad_claim", lambda c: c.token(claims={"roles": ["a", {"b": 1}]}))
_case("scope_as_list", "bad_claim", lambda c: c.token(claims={"scope": ["entitlements:admin"]}))
_case("tid_not_a_string", "bad_claim", lambda c: c.token(claims={"tid": 7}))
_case("act_not_an_object", "bad_claim", lambda c: c.token(claims={"act": "svc"}))

# -- typ ------------------------------------------------------------------------------------

_case("typ_jwt", "bad_type", lambda c: c.token(header={"typ": "JWT"}))
_case("typ_missing", "bad_type", lambda c: c.token(drop=["typ"]))
_case("typ_id_token", "bad_type", lambda c: c.token(header={"typ": "id_token+jwt"}))
_case("typ_logout_token", "bad_type", lambda c: c.token(header={"typ": "logout+jwt"}))
_case("typ_not_a_string", "bad_type", lambda c: c.token(header={"typ": ["at+jwt"]}))

# -- JSON -------------------------------------------------------------------------------------

_case(
    "duplicate_header_alg",
    "malformed",
    lambda c: make_token(
        None,
        c.claims(),
        c.keys.ed25519,
        raw_header_bytes=b'{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"ed-1"}',
    ),
)
_case(
    "duplicate_payload_sub",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=c.raw_claims('"sub":"admin"')
    ),
)
for _kind, _value in (("array", ["claims"]), ("string", "claims"), ("number", 42)):
    _case(
        f"payload_{_kind}",
        "malformed",
        partial(_raw_payload, value=_value),
    )
_case(
    "payload_null",
    "malformed",
    lambda c: make_token(c.header(), None, c.keys.ed25519, raw_payload_bytes=b"null"),
)
_case(
    "header_array",
    "malformed",
    lambda c: make_token(None, c.claims(), c.keys.ed25519, raw_header_bytes=_json([c.header()])),
)
_case(
    "payload_depth_17",
    "malformed",
    lambda c: make_token(
        c.header(),
        None,
        c.keys.ed25519,
        raw_payload_bytes=c.raw_claims('"x":' + "[" * 16 + "]" * 16),
    ),
)
_case(
    "payload_nested_10000_levels",
    "too_large",
    lambda c: make_token(
        c.header(),
        None,
        c.keys.ed25519,
        raw_payload_bytes=c.raw_claims('"x":' + "[" * 10_000 + "]" * 10_000),
    ),
)
_case(
    "payload_utf16",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=json.dumps(c.claims()).encode("utf-16")
    ),
)
_case(
    "payload_utf8_bom",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=b"\xef\xbb\xbf" + _json(c.claims())
    ),
)
_case(
    "header_utf8_bom",
    "malformed",
    lambda c: make_token(
        None, c.claims(), c.keys.ed25519, raw_header_bytes=b"\xef\xbb\xbf" + _json(c.header())
    ),
)
_case(
    "payload_invalid_utf8",
    "malformed",
    lambda c: make_token(
        c.header(),
        None,
        c.keys.ed25519,
        raw_payload_bytes=c.raw_claims('"name":"@@"').replace(b"@@", b"\xff\xfe"),
    ),
)
_case(
    "payload_lone_surrogate",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=c.raw_claims('"name":"\\ud800"')
    ),
)
_case(
    "payload_control_character",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=c.raw_claims('"name":"a\x01b"')
    ),
)
_case(
    "payload_nan_constant",
    "malformed",
    lambda c: make_token(
        c.header(), None, c.keys.ed25519, raw_payload_bytes=c.raw_claims('"x":Infinity')
    ),
)

# -- base64url and structure --------------------------------------------------------------------


def _payload_segment(c: _Ctx, want: Callable[[str], bool]) -> str:
    """A payload segment satisfying ``want``, varied with trailing JSON whitespace and filler."""
    for filler in range(64):
        raw = c.raw_claims(f'"f":"{"?>" * filler}"')
        for spaces in range(3):
            seg = b64url(raw + b" " * spaces)
            if want(seg):
                return seg
    raise AssertionError("no suitable payload segment")


def _noncanonical(c: _Ctx) -> str:
    seg = _payload_segment(c, lambda s: len(s) % 4 != 0)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(seg[-1]) | 1]  # set an unused low bit: same bytes, new text
    return sign_segments(c.segments()[0], seg[:-1] + last, c.keys.ed25519)


def _standard_alphabet(c: _Ctx) -> str:
    seg = _payload_segment(c, lambda s: "-" in s or "_" in s)
    return sign_segments(c.segments()[0], seg.replace("-", "+").replace("_", "/"), c.keys.ed25519)


def _padded(c: _Ctx) -> str:
    seg = _payload_segment(c, lambda s: len(s) % 4 != 0)
    return sign_segments(c.segments()[0], seg + "=" * (-len(seg) % 4), c.keys.ed25519)


_case("base64_padded_payload", "malformed", _padded)
_case("base64_padded_signature", "malformed", lambda c: c.token() + "==")
_case("base64_noncanonical_trailing_bits", "malformed", _noncanonical)
_case("base64_standard_alphabet", "malformed", _standard_alphabet)
_case(
    "base64_length_4k_plus_1",
    "malformed",
    lambda c: sign_segments(
        c.segments()[0], _payload_segment(c, lambda s: len(s) % 4 == 0) + "A", c.keys.ed25519
    ),
)
_case("token_1_mib", "too_large", lambda c: c.token(claims={"pad": "x" * (1 << 20)}))
_case("two_segments", "malformed", lambda c: c.token().rsplit(".", 1)[0])
_case("four_segments", "malformed", lambda c: c.token() + "." + b64url(b"extra"))
_case(
    "five_segments_jwe",
    "malformed",
    lambda c: ".".join([b64url(b'{"alg":"dir","enc":"A256GCM"}'), "", "aXY", "Y3Q", "dGFn"]),
)
_case("empty_string", "malformed", lambda c: "")
_case("only_dots", "malformed", lambda c: "..")
_case("empty_header_segment", "malformed", lambda c: "." + c.token().split(".", 1)[1])
_case("non_ascii", "malformed", lambda c: c.token()[:-2] + "é")
_case("whitespace_inside", "malformed", lambda c: c.token().replace(".", ". ", 1))
_case("bearer_prefix", "malformed", lambda c: "Bearer " + c.token())

HOSTILE_CASE_IDS: tuple[str, ...] = tuple(case_id for case_id, _, _ in _CASES)
assert len(set(HOSTILE_CASE_IDS)) == len(HOSTILE_CASE_IDS), "duplicate hostile case id"


def build_hostile_cases(
    issuer: str, audience: str, keys: KeyBundle, *, now: int | None = None
) -> list[HostileCase]:
    """Every hostile case, with the error code our verifier gives it."""
    ctx = _Ctx(keys, issuer, audience, int(time.time()) if now is None else now)
    return [HostileCase(case_id, code, build(ctx)) for case_id, code, build in _CASES]


def build_hostile_tokens(issuer: str, audience: str, keys: KeyBundle) -> list[tuple[str, str]]:
    """``[(case_id, token), ...]``: every one must be rejected (401 from the HTTP API)."""
    return [(case.id, case.token) for case in build_hostile_cases(issuer, audience, keys)]
