"""Who may see the board: passwords, signed session cookies, CSRF tokens, and the slow-down
of wrong passwords.

Sessions are signed with a random key kept in the store (not derived from the password,
which could then be guessed offline from one cookie), and carry a fingerprint of the
configured credentials: changing the password logs everybody out, a restart nobody.
Wrong passwords are slowed down per client address, doubling up to a cap and never
locking anyone out: an attacker must not be able to lock the crisis cell out of its own
board. ``X-Forwarded-For`` is believed only from the proxies the config names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache

from config.board import BoardSettings

SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
PBKDF2_MIN_ITERATIONS = 100_000
_FORGET_AFTER = 3600.0
"""A client address quiet for this long starts afresh."""
_MAX_CLIENTS = 10_000
"""Addresses remembered at most (the oldest are forgotten first): memory stays bounded."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$15$8$1$<salt>$<hash>`` for ``[board] users`` (standard library only)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**SCRYPT_LOG2_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=64 * 1024 * 1024, dklen=32)
    return "$".join(["scrypt", str(SCRYPT_LOG2_N), str(SCRYPT_R), str(SCRYPT_P),
                     _b64(salt), _b64(digest)])  # fmt: skip


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a hash from :func:`hash_password` (or pbkdf2_sha256)."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            log2_n, r, p = (int(x) for x in parts[1:4])
            salt, expected = _unb64(parts[4]), _unb64(parts[5])
            if not 10 <= log2_n <= 20 or not 1 <= r <= 16 or not 1 <= p <= 4:
                return False
            actual = hashlib.scrypt(password.encode(), salt=salt, n=2**log2_n, r=r, p=p,
                                    maxmem=256 * 1024 * 1024, dklen=len(expected))
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            salt, expected = _unb64(parts[2]), _unb64(parts[3])
            if iterations < PBKDF2_MIN_ITERATIONS:
                return False
            actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations,
                                         dklen=len(expected))
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in viewer."""

    user: str
    expires_at: float
    nonce: str


class Signer:
    """Signs what the board hands its viewers: session cookies and CSRF tokens."""

    def __init__(self, key: bytes, settings: BoardSettings) -> None:
        self._key = key
        self._settings = settings
        # Changing the password (or any user's) invalidates every session.
        credentials = json.dumps(
            [settings.password.get_secret_value() if settings.password else None,
             sorted(settings.users.items())]
        )
        self._credentials = hmac.new(key, credentials.encode(), "sha256").hexdigest()[:16]

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}\n{text}".encode(), "sha256").hexdigest()

    def session_cookie(self, user: str, now: float) -> str:
        payload = json.dumps({"u": user, "e": now + self._settings.session_hours * 3600,
                              "n": secrets.token_hex(8), "k": self._credentials})
        body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{body}.{self._mac('session', body)}"

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie carries, if it is ours, unexpired and still valid."""
        if not cookie or "." not in cookie or len(cookie) > 1024:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            user, expires_at, nonce = str(data["u"]), float(data["e"]), str(data["n"])
            credentials = str(data["k"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires_at <= now or credentials != self._credentials:
            return None
        if self._settings.password is None and user not in self._settings.users:
            return None
        return Session(user, expires_at, nonce)

    def csrf(self, session: Session) -> str:
        """The token a logged-in page posts back (the logout form)."""
        return self._mac("csrf", session.nonce)[:32]

    def login_csrf(self, nonce: str) -> str:
        """The login form's token, tied to a cookie only this site can set."""
        return self._mac("login", nonce)[:32]

    def check_login_csrf(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.login_csrf(nonce))

    def token_matches(self, token: str) -> bool:
        """An ``Authorization: Bearer`` token against ``[board] api_token``."""
        expected = self._settings.api_token
        if expected is None:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        return hmac.compare_digest(digest, hashlib.sha256(
            expected.get_secret_value().encode()).digest())


async def check_password(settings: BoardSettings, user: str, password: str,
                         run: Callable[[Callable[[], bool]], Awaitable[bool]]) -> str | None:
    """The user name a login stands for, or None. ``run`` offloads the slow hash."""
    if user and user in settings.users:
        encoded = settings.users[user]
        return user if await run(lambda: verify_password(password, encoded)) else None
    if settings.password is None:
        # Spend the same time whether or not the name exists.
        await run(lambda: verify_password(password, _dummy()))
        return None
    given = hashlib.sha256(password.encode()).digest()
    expected = hashlib.sha256(settings.password.get_secret_value().encode()).digest()
    return (user or "crisis cell") if hmac.compare_digest(given, expected) else None


@cache
def _dummy() -> str:
    return hash_password("not a password", salt=b"\0" * 16)


@dataclass(slots=True)
class _Client:
    failures: int = 0
    not_before: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Wrong passwords from one client address make its next try wait: 1 s, 2 s, 4 s...
    up to ``max_login_delay``, after ``free_failures`` free ones. Never a lockout."""

    def __init__(self, settings: BoardSettings, clock: Callable[[], float]) -> None:
        self._free = settings.free_failures
        self._max = settings.max_login_delay
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its password is even looked at."""
        state = self._clients.get(client)
        if state is None:
            return 0.0
        now = self.clock()
        if now - state.last_failure > _FORGET_AFTER:
            del self._clients[client]
            return 0.0
        return max(0.0, state.not_before - now)

    def failed(self, client: str) -> float:
        """Record a wrong password; returns the wait it imposes."""
        now = self.clock()
        state = self._clients.pop(client, None) or _Client()
        self._clients[client] = state  # most recent last: the oldest are forgotten first
        while len(self._clients) > _MAX_CLIENTS:
            self._clients.popitem(last=False)
        state.failures += 1
        state.last_failure = now
        over = state.failures - self._free
        delay = 0.0 if over <= 0 else min(self._max, 2.0 ** (over - 1))
        state.not_before = now + delay
        return delay

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def client_address(peer: str | None, forwarded_for: str | None,
                   proxies: Sequence[Network]) -> str:
    """The address a request comes from: the peer, or, when the peer is a trusted proxy,
    the nearest address in ``X-Forwarded-For`` that is not one."""
    address = peer or "unknown"
    if not forwarded_for or not _trusted(address, proxies):
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop if _is_ip(hop) else address
    return hops[0] if hops and _is_ip(hops[0]) else address


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
