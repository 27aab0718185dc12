"""AWS identities and clients: one per account, each with its own credentials, refreshed before they expire.

Why it is built this way:
- One `Identity` per account (or one for the source when no accounts are listed). A wrong credential then fails
  that account alone, with its id in the message, and the others keep running.
- A role is assumed through a credential provider registered on the account's own aiobotocore session, so
  botocore's refresh logic renews it (15 minutes before expiry, advisory; 10, mandatory) on whatever call comes
  next; nothing of ours has to remember to.
- Clients are created once per (service, region) and kept open (each holds a connection pool), closed with the
  identity.
- Retries: botocore's "adaptive" mode retries throttling and 5xx with exponential backoff and jitter, and rate
  limits the client after throttling; we only add what it does not do (a failed poll is retried next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws.config import AccountConfig, AwsAuth

log = logging.getLogger("flowcollector.aws")

CLIENT_CONFIG = AioConfig(
    retries={"max_attempts": 8, "mode": "adaptive"},
    connect_timeout=10,
    read_timeout=60,
    max_pool_connections=32,
)

# Error codes that mean "these credentials cannot do this": reported as such, and not retried within a poll.
AUTH_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "AllAccessDisabled",
    }
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """A one-line reason for an AWS failure, with the code first so operators can grep for it."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "")
        return f"{err.get('Code', 'error')}: {err.get('Message', '') or exc} ({op})".strip()
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


class _AssumeRoleProvider:
    """A botocore credential provider that assumes `role_arn` with the base session's identity."""

    METHOD = "assume-role"
    CANONICAL_NAME = "flowcollector-assume-role"

    def __init__(
        self, base: AioSession, base_kwargs: Mapping[str, Any], auth: AwsAuth, role_arn: str, extid: str | None
    ):
        self._base = base
        self._base_kwargs = dict(base_kwargs)
        self._auth = auth
        self._role_arn = role_arn
        self._external_id = extid

    async def _fetch(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "RoleArn": self._role_arn,
            "RoleSessionName": self._auth.role_session_name,
            "DurationSeconds": int(self._auth.role_duration),
        }
        if self._external_id:
            kwargs["ExternalId"] = self._external_id
        async with self._base.create_client("sts", config=CLIENT_CONFIG, **self._base_kwargs) as sts:
            response = await sts.assume_role(**kwargs)
        c = response["Credentials"]
        log.info("assumed role %s (expires %s)", self._role_arn, c["Expiration"].isoformat())
        return {
            "access_key": c["AccessKeyId"],
            "secret_key": c["SecretAccessKey"],
            "token": c["SessionToken"],
            "expiry_time": c["Expiration"].isoformat(),
        }

    async def load(self) -> AioDeferredRefreshableCredentials:
        return AioDeferredRefreshableCredentials(refresh_using=self._fetch, method="sts-assume-role")


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """Who to be for one account: the source's auth with the account's overrides applied."""

    label: str  # "account 123456789012" or "source credentials": names the identity in errors
    account: str | None
    auth: AwsAuth
    role_arn: str | None
    external_id: str | None = field(repr=False)
    profile: str | None
    regions: tuple[str, ...]


def identities(auth: AwsAuth, accounts: tuple[AccountConfig, ...]) -> list[IdentitySpec]:
    """One spec per listed account, or a single one for the source's own credentials."""
    if not accounts:
        return [IdentitySpec("source credentials", None, auth, auth.role_arn, auth.external_id, auth.profile, ())]
    out = []
    for a in accounts:
        role = a.role_arn or auth.role_arn
        if role:
            role = role.replace("{account}", a.id)
        out.append(
            IdentitySpec(
                f"account {a.id}",
                a.id,
                auth,
                role,
                a.external_id or auth.external_id,
                a.profile or auth.profile,
                a.regions,
            )
        )
    return out


class Identity:
    """An aiobotocore session for one spec, and its open clients."""

    def __init__(self, spec: IdentitySpec) -> None:
        self.spec = spec
        auth = spec.auth
        self._session = AioSession(profile=spec.profile) if spec.profile else AioSession()
        if auth.credentials_file is not None:
            self._session.set_config_variable("credentials_file", str(auth.credentials_file))
        base_kwargs: dict[str, Any] = {"endpoint_url": auth.endpoint_url, "region_name": auth.region or "us-east-1"}
        if auth.access_key_id is not None:
            base_kwargs.update(
                aws_access_key_id=auth.access_key_id,
                aws_secret_access_key=auth.secret_access_key,
                aws_session_token=auth.session_token,
            )
        self._client_kwargs = dict(base_kwargs)
        if spec.role_arn:
            base = AioSession(profile=spec.profile) if spec.profile else AioSession()
            if auth.credentials_file is not None:
                base.set_config_variable("credentials_file", str(auth.credentials_file))
            provider = _AssumeRoleProvider(base, base_kwargs, auth, spec.role_arn, spec.external_id)
            self._session.get_component("credential_provider").insert_before("env", provider)
            # The role's credentials replace the static keys for every client of this identity.
            for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                self._client_kwargs.pop(k, None)
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()

    @property
    def label(self) -> str:
        return self.spec.label

    async def client(self, service: str, region: str | None = None) -> Any:
        """An open client of `service` in `region` (the source's region by default), created on first use."""
        region = region or self.spec.auth.region or "us-east-1"
        key = (service, region)
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                kwargs = {**self._client_kwargs, "region_name": region}
                client = await self._stack.enter_async_context(
                    self._session.create_client(service, config=CLIENT_CONFIG, **kwargs)
                )
                self._clients[key] = client
        return client

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()
