"""Credentials of the GCP sources, and how a credential problem is reported.

Which credentials (README "GCP credentials"):
- `credentials_file`: a service-account key file (or gcloud's user credentials, `type: authorized_user`). It is
  used with `endpoint` too: an endpoint may be a Private Service Connect address of the real service, which needs
  them. Other credential configurations (workload identity federation) are ADC's: GOOGLE_APPLICATION_CREDENTIALS.
- `endpoint` without a file: an emulator (fake-gcs-server, the Pub/Sub emulator), which takes no credentials:
  anonymous credentials, so nothing on the machine (a developer's gcloud login) is sent to it.
- neither: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default login,
  the metadata server of a GCE VM or GKE pod).

Loading happens when a source starts a poll, not when the config is read: a key file fixed (or mounted late) is
picked up at the next poll, and a missing one fails that source, loudly and by name, not the daemon.
Messages never carry a key's content, only the file's path and what is wrong with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import google.oauth2.credentials
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import service_account

from adapters.gcp.config import GcpAuth

STORAGE_READ = "https://www.googleapis.com/auth/devstorage.read_only"
PUBSUB = "https://www.googleapis.com/auth/pubsub"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

# What a credential problem raises: loading a file or finding ADC, and refreshing a token later (a revoked or
# deleted key, a token endpoint out of reach).
ERRORS: tuple[type[BaseException], ...] = (google.auth.exceptions.GoogleAuthError, OSError, ValueError)


class CredentialsUnavailable(Exception):
    """The source's credentials could not be loaded; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Loaded:
    credentials: Credentials
    project: str | None  # the key's or ADC's project, when they name one
    who: str  # how messages name them: "credentials_file /path", "anonymous (endpoint ...)", "ADC"


def load(auth: GcpAuth, scopes: tuple[str, ...]) -> Loaded:
    """The credentials `auth` describes (module docstring), or CredentialsUnavailable. Blocking (reads a file, and
    ADC may ask the metadata server): call it off the event loop."""
    if auth.credentials_file is not None:
        path = auth.credentials_file
        who = f"credentials_file {path}"
        if not path.is_file():
            raise CredentialsUnavailable(f"{who}: no such file")
        try:
            creds, project = _from_file(path, scopes)
        except ERRORS as exc:
            raise CredentialsUnavailable(f"{who}: not a usable key file ({describe(exc)})") from None
        return Loaded(creds, project, who)
    if auth.endpoint is not None:
        return Loaded(AnonymousCredentials(), None, f"anonymous (endpoint {auth.endpoint})")
    try:
        creds, project = google.auth.default(scopes=list(scopes))
    except ERRORS as exc:
        raise CredentialsUnavailable(
            "no credentials_file and no Application Default Credentials found (set credentials_file, or "
            f"GOOGLE_APPLICATION_CREDENTIALS, or run on GCP with a service account): {describe(exc)}"
        ) from None
    return Loaded(creds, project, "Application Default Credentials")


def _from_file(path: Path, scopes: tuple[str, ...]) -> tuple[Credentials, str | None]:
    """A service-account key, or gcloud's user credentials (`type` says which). Other credential configurations
    (workload identity federation) go through GOOGLE_APPLICATION_CREDENTIALS and ADC, which check them."""
    info = json.loads(path.read_bytes())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        sa = service_account.Credentials.from_service_account_info(info, scopes=list(scopes))
        return sa, info.get("project_id")
    if kind == "authorized_user":
        user = google.oauth2.credentials.Credentials.from_authorized_user_info(info, scopes=list(scopes))
        return user, info.get("quota_project_id")
    raise ValueError(f"type {kind!r}: expected 'service_account' (a key) or 'authorized_user'; set other credential "
                     "configurations in GOOGLE_APPLICATION_CREDENTIALS instead")  # fmt: skip


def describe(exc: BaseException) -> str:
    """A one-line reason for a Google client or auth failure: the API's own message, without the request's
    headers or a key's content."""
    message: Any = getattr(exc, "message", None)
    code = getattr(exc, "code", None)
    if isinstance(message, str) and message:
        head, sep, tail = message.partition(": ")
        if sep and head.split(" ", 1)[0] in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            message = tail  # "GET <url>: Not Found": the request's URL says nothing the caller's message does not
        text = f"{code} {message}" if code else message
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, (google.auth.exceptions.RefreshError, google.auth.exceptions.TransportError)):
        text = f"cannot get an access token: {text}"
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."
