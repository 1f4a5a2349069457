"""``[board]``: the crisis board, a live page for the people running the response.

Without this section ``backchannel serve`` has no ``/board`` and no ``/api``: the page
shows names, masked numbers and message texts, so it is never served without a password.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# scrypt$<log2 n>$<r>$<p>$<salt>$<hash> or pbkdf2_sha256$<iterations>$<salt>$<hash>
# (base64, as `backchannel hash-password` prints them).
_B64 = r"[A-Za-z0-9+/]+={0,2}"
PASSWORD_HASH = re.compile(
    rf"^(scrypt\$\d{{1,2}}\$\d{{1,2}}\$\d{{1,2}}|pbkdf2_sha256\$\d{{4,8}})\${_B64}\${_B64}$"
)
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class BoardSettings(BaseModel):
    """Who may see the board, and how lively it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password: SecretStr | None = None
    """One password for the whole crisis cell."""
    users: dict[str, str] = Field(default_factory=dict)
    """Named accounts: user name -> a hash from ``backchannel hash-password``."""
    api_token: SecretStr | None = None
    """``Authorization: Bearer <token>`` for scripts calling ``/api/...``."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed."""
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """A login lasts this long (a crisis can outlast a working day)."""
    days: int = Field(default=3, ge=1, le=366)
    """Messages of the last this many days are listed."""
    update_interval: float = Field(default=0.25, ge=0.05, le=10.0)
    """At most one live update per view in this many seconds, however busy the store."""
    free_failures: int = Field(default=3, ge=0, le=100)
    """Wrong passwords from one address before each next try has to wait."""
    max_login_delay: float = Field(default=15.0, ge=0.1, le=300.0)
    """The longest wait between tries; it doubles up to this and never locks anyone out."""

    @field_validator("password", "api_token")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters")
        return secret

    @field_validator("users")
    @classmethod
    def _hashed(cls, users: dict[str, str]) -> dict[str, str]:
        for name, encoded in users.items():
            if not _USER_NAME.match(name):
                raise ValueError("user names are letters, digits and . _ @ - (64 at most)")
            if not PASSWORD_HASH.match(encoded):
                # Never the value: a plain password put here by mistake must not be echoed.
                raise ValueError(
                    f"{name}: must be a password hash from `backchannel hash-password`"
                )
        return users

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for index, proxy in enumerate(proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"[{index}] is not an IP address or network") from None
        return proxies

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> BoardSettings:
        if self.password is None and not self.users:
            raise ValueError("give a password or users: the board is never served without one")
        return self

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies]

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.password, self.api_token) if s is not None]
