"""JWT authentication exactly as cc-backend's REST API does it, so scheduler adapters keep their tokens.

cc-backend (internal/auth/jwt.go, auth.go ``AuthAPI``): the token comes from ``X-Auth-Token`` or
else ``Authorization`` with the ``Bearer`` prefix removed; only EdDSA (Ed25519) signatures, checked
with the environment variable ``JWT_PUBLIC_KEY`` = standard base64 of the **raw 32-byte** public
key (``ed25519.PublicKey(bytes)``, not PEM); ``exp``/``nbf`` are checked when present, ``iat`` is
not (golang-jwt v5's default); the roles come from the ``roles`` claim.  The API is open to a
user whose only role is ``api``, or who has both ``admin`` and ``api``.  The client address must
be in ``main.api-allowed-ips`` when that list is set and does not start with ``*`` (cc-backend
takes it from ``X-Real-Ip``, then ``X-Forwarded-For``, then the peer address).

Differences, both on the side of clarity: a missing or bad token is 401, a valid token without the
role is 403 (cc-backend answers 401 to both), and each error says which of these it was.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class User:
    """The authenticated caller (``sub`` and ``roles`` claims)."""

    name: str
    roles: tuple[str, ...]


class AuthError(Exception):
    """Authentication (401) or authorisation (403) failed; the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_public_key(b64: str) -> Any:
    """cc-backend's ``JWT_PUBLIC_KEY`` (base64 of the raw Ed25519 key) -> a cryptography public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("JWT_PUBLIC_KEY: not valid base64 (cc-backend's key is base64 of the raw "
                          "32-byte Ed25519 public key)") from None
    if len(raw) != 32:
        raise ConfigError(f"JWT_PUBLIC_KEY: decodes to {len(raw)} bytes, an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def api_role_ok(roles: Sequence[str]) -> bool:
    """cc-backend's ``AuthAPI`` rule: exactly ``["api"]``, or both ``admin`` and ``api``."""
    if len(roles) == 1:
        return roles[0] == "api"
    return "api" in roles and "admin" in roles


def client_address(headers: Mapping[str, str], peer: str) -> str:
    """The address cc-backend's ``securedCheck`` compares with ``api-allowed-ips``."""
    addr = headers.get("X-Real-Ip") or headers.get("X-Forwarded-For") or peer
    if addr.startswith("[") and "]" in addr:
        return addr[1:addr.index("]")]
    if addr.count(":") == 1:
        return addr.rpartition(":")[0]
    return addr


#: Verified tokens remembered at most (a site has a few adapters, each with one token).
VERIFIED_TOKENS = 256
_EXPIRED = "invalid token: token has expired"


class Authenticator:
    """Verifies tokens with cc-backend's public key; ``None`` key disables authentication.

    A token whose signature was verified is remembered with its claims (up to
    :data:`VERIFIED_TOKENS`): a scheduler adapter sends the same token with every stop, and the
    Ed25519 check costs about 0.15 ms, a tenth of what the sidecar spends on a stop.  ``exp`` and
    ``nbf`` are checked on every request all the same (``clock``: seconds since the epoch)."""

    def __init__(self, public_key_b64: str | None, *, allowed_ips: Sequence[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.key = load_public_key(public_key_b64) if public_key_b64 else None
        self.allowed_ips = list(allowed_ips)
        self.clock = clock
        self._verified: dict[str, dict[str, Any]] = {}
        self._verified_lock = threading.Lock()
        if self.key is not None:
            import jwt  # noqa: F401 - imported now, not by the first request (~70 ms)

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def authenticate(self, headers: Mapping[str, str], peer: str, *, require_api: bool) -> User | None:
        """The caller of a request, or :class:`AuthError`.  ``require_api``: the write-endpoint role rule
        (otherwise any valid token with ``api`` or ``admin`` is enough)."""
        if self.key is None:
            return None
        raw = headers.get("X-Auth-Token") or ""
        if not raw:
            raw = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if not raw:
            raise AuthError(401, "missing token (send cc-backend's JWT as 'Authorization: Bearer <token>' "
                                 "or 'X-Auth-Token')")
        claims = self._verified.get(raw)
        if claims is None:
            claims = self._verify(raw)
        else:  # checked as golang-jwt does: expired at exp, valid from nbf
            now = self.clock()
            exp, nbf = claims.get("exp"), claims.get("nbf")
            if exp is not None and now >= exp:
                raise AuthError(401, _EXPIRED)
            if nbf is not None and now < nbf:
                raise AuthError(401, "invalid token: The token is not yet valid (nbf)")
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError(401, f"invalid token: claim 'roles' must be a list of strings, got {roles!r}")
        user = User(str(claims.get("sub") or ""), tuple(roles))
        if self.allowed_ips and self.allowed_ips[0] != "*":
            addr = client_address(headers, peer)
            if addr not in self.allowed_ips:
                raise AuthError(401, f"unknown ip: {addr} (not in main.api-allowed-ips)")
        if require_api and not api_role_ok(user.roles):
            raise AuthError(403, f"missing role: api (user {user.name!r} has roles {list(user.roles)}; "
                                 "the API needs exactly ['api'] or both 'admin' and 'api')")
        if not require_api and not ({"api", "admin"} & set(user.roles)):
            raise AuthError(403, f"missing role: api or admin (user {user.name!r} has roles {list(user.roles)})")
        return user

    def _verify(self, raw: str) -> dict[str, Any]:
        """The claims of a token whose signature, ``exp`` and ``nbf`` check out (remembered)."""
        import jwt

        assert self.key is not None
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError as e:
            raise AuthError(401, f"invalid token: {e}") from None
        if header.get("alg") != "EdDSA":
            raise AuthError(401, f"invalid token: only Ed25519/EdDSA supported, got alg {header.get('alg')!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                raw, self.key, algorithms=["EdDSA"],
                options={"verify_iat": False, "verify_aud": False, "verify_iss": False})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, _EXPIRED) from None
        except jwt.PyJWTError as e:
            raise AuthError(401, f"invalid token: {e}") from None
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[raw] = claims
        return claims
