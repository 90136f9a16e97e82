"""A minimal OIDC issuer for tests of SeaweedFS' STS (the real issuer is the broker).

Serves ``/.well-known/openid-configuration`` and ``/jwks.json`` for one ES256
key over Hypercorn on 127.0.0.1 and mints compact JWS tokens (ES256, ``kid``
header) with the AWS session-tag claims.

Tag claims: SeaweedFS 4.48 reads principal tags from the flat claim
``https://aws.amazon.com/tags/principal_tags``; AWS reads the nested
``https://aws.amazon.com/tags`` → ``principal_tags`` form. ``mint`` emits both
unless told otherwise.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypercorn.config import Config
from hypercorn.trio import serve

AWS_TAGS_CLAIM = "https://aws.amazon.com/tags"
FLAT_PRINCIPAL_TAGS_CLAIM = AWS_TAGS_CLAIM + "/principal_tags"

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid,
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    def sign_jwt(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass(frozen=True)
class TestIssuer:
    __test__ = False  # not a pytest test class

    url: str
    key: SigningKey

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks.json"

    def claims(
        self,
        *,
        audience: str,
        subject: str,
        tags: Mapping[str, str] | None,
        flat_tags: bool = True,
        nested_tags: bool = True,
        lifetime: int = 600,
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime,
        }
        if tags is not None:
            listed = {key: [value] for key, value in tags.items()}
            if nested_tags:
                claims[AWS_TAGS_CLAIM] = {
                    "principal_tags": listed,
                    "transitive_tag_keys": sorted(tags),
                }
            if flat_tags:
                claims[FLAT_PRINCIPAL_TAGS_CLAIM] = listed
        return claims

    def mint(self, **kwargs: Any) -> str:
        return self.key.sign_jwt(self.claims(**kwargs))


def _app(documents: dict[str, bytes]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        found = documents.get(scope["path"])
        status = 200 if found is not None and scope["method"] == "GET" else 404
        body = found if found is not None and status == 200 else b'{"error":"not_found"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def run_test_issuer(key: SigningKey | None = None) -> AsyncIterator[TestIssuer]:
    """Serve the issuer on a free 127.0.0.1 port until the block ends."""
    key = key or SigningKey.generate("test-key-1")
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    documents: dict[str, bytes] = {}
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial_serve, _app(documents), config)
        url = binds[0]
        issuer = TestIssuer(url=url, key=key)
        documents["/.well-known/openid-configuration"] = json.dumps(
            {
                "issuer": url,
                "jwks_uri": issuer.jwks_uri,
                "id_token_signing_alg_values_supported": ["ES256"],
            }
        ).encode()
        documents["/jwks.json"] = json.dumps({"keys": [key.jwk()]}).encode()
        try:
            yield issuer
        finally:
            nursery.cancel_scope.cancel()


async def partial_serve(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    config: Config,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
