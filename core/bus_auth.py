"""How a process proves who it is to NATS: a user and password, and TLS, from the environment.

| variable | what |
|---|---|
| ``AIGW_NATS_USER``, ``AIGW_NATS_PASSWORD`` | the role's NATS user: ``ingress``, ``worker`` ... |
| ``AIGW_NATS_TLS_CA`` | CA bundle that signed the servers' certificates (turns TLS on) |
| ``AIGW_NATS_TLS_CERT``, ``AIGW_NATS_TLS_KEY`` | a client certificate (servers that ask) |

``tls://`` URLs in ``NATS_URL`` turn TLS on too, checked against the system's CAs. With none of
these set a process connects as before, without credentials. Whatever the settings, each role
takes its replies on an inbox of its own (``schemas.bus_roles.inbox_prefix``), which the
server's permissions let no other role read.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from faststream.nats.security import NatsSecurity, NatsUserPassword
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.bus_roles import inbox_prefix


class BusAuth(BaseSettings):
    # An error must not print what it was given: that may be the password.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True,
                                      populate_by_name=True, hide_input_in_errors=True)

    user: str | None = Field(default=None, validation_alias="AIGW_NATS_USER")
    password: SecretStr | None = Field(default=None, validation_alias="AIGW_NATS_PASSWORD")
    tls_ca: Path | None = Field(default=None, validation_alias="AIGW_NATS_TLS_CA")
    tls_cert: Path | None = Field(default=None, validation_alias="AIGW_NATS_TLS_CERT")
    tls_key: Path | None = Field(default=None, validation_alias="AIGW_NATS_TLS_KEY")

    @field_validator("user", "password", "tls_ca", "tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _complete(self) -> BusAuth:
        if (self.user is None) != (self.password is None):
            raise ValueError("set both AIGW_NATS_USER and AIGW_NATS_PASSWORD, or neither")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both AIGW_NATS_TLS_CERT and AIGW_NATS_TLS_KEY, or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context our TLS settings call for; None leaves nats-py to its default (plain
        ``nats://``, or the system's CAs for a ``tls://`` URL)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca) if self.tls_ca is not None else None)
        if self.tls_cert is not None and self.tls_key is not None:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return context

    def connect_options(self, role: str) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` of a process in ``role``."""
        options: dict[str, Any] = {"inbox_prefix": inbox_prefix(role)}
        if self.user is not None and self.password is not None:
            options["user"] = self.user
            options["password"] = self.password.get_secret_value()
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
        return options

    def broker_options(self, role: str) -> dict[str, Any]:
        """Keyword arguments for FastStream's ``NatsBroker`` of a process in ``role``."""
        options: dict[str, Any] = {"inbox_prefix": inbox_prefix(role)}
        context = self.ssl_context()
        if self.user is not None and self.password is not None:
            options["security"] = NatsUserPassword(
                self.user, self.password.get_secret_value(), ssl_context=context)
        elif context is not None:
            options["security"] = NatsSecurity(ssl_context=context)
        return options
