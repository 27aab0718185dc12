"""Credentials of the GCP sources, and how a credential problem is reported.

Which credentials (README "GCP credentials"):
- `credentials_file`: a key file, loaded with google-auth's `load_credentials_from_file`, so a service-account key
  and also a workload identity federation config (`external_account`) or gcloud's user credentials work. It is used
  with `endpoint` too: an endpoint may be a Private Service Connect address of the real service, which needs them.
- `endpoint` without a file: an emulator (fake-gcs-server, the Pub/Sub emulator), which takes no credentials:
  anonymous credentials, so nothing on the machine (a developer's gcloud login) is sent to it.
- neither: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default login,
  the metadata server of a GCE VM or GKE pod).

Loading happens when a source starts a poll, not when the config is read: a key file fixed (or mounted late) is
picked up at the next poll, and a missing one fails that source, loudly and by name, not the daemon.
Messages never carry a key's content, only the file's path and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import google.auth
import google.auth.exceptions
from google.auth.credentials import AnonymousCredentials, Credentials

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
            creds, project = google.auth.load_credentials_from_file(str(path), scopes=list(scopes))
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


def describe(exc: BaseException) -> str:
    """A one-line reason for a Google client or auth failure: the API's own message, without the request's
    headers or a key's content."""
    message: Any = getattr(exc, "message", None)
    code = getattr(exc, "code", None)
    if isinstance(message, str) and message:
        text = f"{code} {message}" if code else message
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."
