"""Secrets out of every log line: one formatter on the root handler redacts credentials, whatever logger wrote them.

Why it is built this way:
- The libraries the collector talks to the clouds with log what they send. botocore at DEBUG prints the canonical
  request (`x-amz-security-token:...`), the request parameters (`'ExternalId': '...'`), the headers
  (`'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA.../...'`) and STS's raw answer (`<SecretAccessKey>...`);
  the Azure and Google SDKs do the same with `sig=`, `AccountKey=` and bearer tokens. We cannot make every
  library careful, so the redaction sits where every line goes through: the formatter of the root handler. It
  sees the final text (arguments substituted, traceback appended), so a secret in an exception message or a
  `%r` of a dict is caught as well as one in a format string.
- By name, not by value shape: a secret is the value after a name that carries secrets (`Authorization`,
  `X-Amz-Security-Token`, `SecretAccessKey`, `sig`, `password`, ...), in each way names and values are written:
  `name: value` (HTTP headers, botocore's canonical request), `name=value` (query strings, connection strings,
  form bodies, Python reprs), `'name': 'value'` / `"name": "value"` (dict reprs, JSON, `b'...'` values included),
  and `<Name>value</Name>` (STS, S3 XML). PEM private keys and `scheme://user:password@` URLs are caught by their
  own shape, wherever they appear.
- Enough is kept to debug: an access key id keeps its first four characters (`AKIA****`: a long-term key,
  `ASIA****`: a temporary one), SigV4's `Credential=` keeps its scope (`AKIA****/20261203/us-east-1/sts/...`), and
  error codes such as `SignatureDoesNotMatch` stay whole, since only a name followed by `:` or `=` is redacted.
- Over-redaction is the accepted failure: `password: is wrong` loses its text, never a secret its redaction.
- The literal values of the configured secrets (fields marked `Secret` in `collector.options`) and of the usual
  credential environment variables are redacted too, whatever surrounds them: a belt to the patterns' braces for a
  library that logs a secret in a form no pattern knows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
import types
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"

# Names whose value is a secret. Matched case-insensitively, and a `_` or `-` in a name matches `_`, `-` or nothing
# (`secret_access_key` is also `SecretAccessKey` and `secret-access-key`).
SECRET_NAMES = (
    "x-amz-security-token", "security-token", "securitytoken", "aws_security_token",
    "x-amz-signature", "signature", "sig",
    "sessiontoken", "session_token", "aws_session_token",
    "secretaccesskey", "secret_access_key", "aws_secret_access_key", "secret_key", "secretkey", "secret",
    "client_secret", "clientsecret", "client-secret",
    "externalid", "external_id", "external-id",
    "sharedaccesssignature", "sharedaccesskey", "accountkey", "account_key",
    "password", "passwd", "pwd",
    "private_key", "privatekey",
    "token", "access_token", "refresh_token", "id_token", "x-goog-iam-authorization-token",
    "api_key", "apikey", "x-api-key", "x-functions-key",
)  # fmt: skip
# Identifiers that are not secret but should not be logged whole: the first four characters are kept.
PARTIAL_NAMES = (
    "x-amz-credential", "credential", "aws_access_key_id", "access_key_id", "accesskeyid", "access_key", "accesskey",
)  # fmt: skip
# Headers whose whole value is a credential, unless it is SigV4 (scheme, then Credential=, SignedHeaders=,
# Signature=), whose secret parts the rules above redact and whose scope helps debugging a SignatureDoesNotMatch.
AUTH_NAMES = ("authorization", "proxy-authorization", "x-ms-authorization", "ocp-apim-subscription-key")


def _names(names: Iterable[str]) -> str:
    # Longest first, so `aws_secret_access_key` is matched whole before `secret` could match inside it.
    alternatives = sorted({re.escape(n).replace("_", "[_-]?").replace(r"\-", "[_-]?") for n in names}, key=len)
    return "(?:" + "|".join(reversed(alternatives)) + ")"


# A name starts at a non-alphanumeric character (`?X-Amz-...`, `'Authorization'`, `"token"`); `_` and `-` count as
# separators, so `aws_session_token` is found as a whole and `insert_token=` is (over-)redacted rather than missed.
_START = r"(?<![A-Za-z0-9])"
# After the name: the key's closing quote and a separator, atomic (Python 3.11), so the checks on what follows
# (a quote, a SigV4 scheme) cannot be dodged by backtracking over the blanks.
_SEP_COLON = r"""(?>["']?[ \t]*:[ \t]*(?:\r?\n)?[ \t]*)"""  # `Signature:\n<hex>` is how botocore.auth prints it
_SEP_EQUALS = r"""(?>["']?[ \t]*=[ \t]*)"""
# A (name, value) pair, as hpack and gRPC log headers and metadata: `(b'authorization', b'Bearer ...')`.
_SEP_TUPLE = r"""(?>["'][ \t]*,[ \t]*)"""
_SCHEME = r"(?:(?:Bearer|Basic|Digest|Negotiate|SharedKey|SharedKeyLite|SharedAccessSignature|OAuth|token)[ \t]+)?"
# An unquoted value ends where a query string, header list, connection string or repr would go on.
_BARE = r"""[^\s,;&'"<>(){}\[\]]+"""
_QUOTED = r"""b?(?:"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""


def _quoted_sub(m: re.Match[str]) -> str:
    value = m.group(2)
    prefix = "b" if value.startswith("b") else ""
    quote = value[len(prefix)]
    return f"{m.group(1)}{prefix}{quote}{REDACTED}{quote}"


# Every name above contains one of these (tests/test_secrets_in_logs.py checks it): a line without any of them
# skips the name rules, so the collector's own lines (a progress line, a rejected record) cost a few substring
# searches rather than the name alternations at every position.
NAME_NEEDLES = ("token", "sig", "secret", "key", "pass", "pwd", "private", "external", "auth", "credential")


def _build() -> list[tuple[tuple[str, ...], re.Pattern[str], Any]]:
    """(needles, pattern, replacement): a rule runs when its lower-cased needle is in the lower-cased text."""
    secret, partial, auth = _names(SECRET_NAMES), _names(PARTIAL_NAMES), _names(AUTH_NAMES)
    ci = re.IGNORECASE
    either = f"(?:{_SEP_COLON}|{_SEP_EQUALS})"
    quoted_sep = f"(?:{_SEP_COLON}|{_SEP_EQUALS}|{_SEP_TUPLE})"
    unquoted = r"(?!b?['\"])"
    names = NAME_NEEDLES
    return [
        # PEM blocks, e.g. a service account's private_key printed with real line breaks.
        (
            ("private key",),
            re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
            rf"-----BEGIN \1PRIVATE KEY-----{REDACTED}-----END \1PRIVATE KEY-----",
        ),
        # scheme://user:password@host
        (("@",), re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", ci), rf"\1{REDACTED}@"),
        # XML elements: <SecretAccessKey>...</SecretAccessKey>, <AccessKeyId>ASIA...</AccessKeyId>
        (names, re.compile(rf"<({secret})>[^<]*</\1>", ci), rf"<\1>{REDACTED}</\1>"),
        (names, re.compile(rf"<({partial})>([A-Za-z0-9]{{0,4}})[^<]*</\1>", ci), r"<\1>\2****</\1>"),
        # Quoted values (a repr, JSON), then bare ones (headers, query strings, connection strings).
        (names, re.compile(rf"({_START}{auth}{quoted_sep})(?!b?['\"]?AWS4-)({_QUOTED})", ci), _quoted_sub),
        (names, re.compile(rf"({_START}{secret}{quoted_sep})({_QUOTED})", ci), _quoted_sub),
        (names, re.compile(rf"({_START}{auth}{_SEP_COLON}){unquoted}(?!AWS4-)[^\r\n]+", ci), rf"\1{REDACTED}"),
        (names, re.compile(rf"({_START}{secret}{either}){unquoted}{_SCHEME}{_BARE}", ci), rf"\1{REDACTED}"),
        (
            names,
            re.compile(rf"((?<![\w-]){partial}{either}b?['\"]?)([A-Za-z0-9]{{1,4}})[A-Za-z0-9]*", ci),
            r"\1\2****",
        ),
        # AWS access key ids by their shape, wherever they are (a long-term AKIA, a temporary ASIA).
        (
            ("akia", "asia", "abia", "acca"),
            re.compile(r"(?<![A-Za-z0-9])(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{12,}(?![A-Za-z0-9])"),
            r"\1****",
        ),
    ]


_RULES = _build()
# Literal values known to be secrets (from the config and the environment); at least this long, so a short value
# (`testing`, a one-word test password) does not turn every occurrence of an ordinary word into <redacted>.
MIN_LITERAL = 8
ENV_SECRETS = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN",
)  # fmt: skip
_literals: frozenset[str] = frozenset()
_literal_re: re.Pattern[str] | None = None
_lock = threading.Lock()


def remember(values: Iterable[str | None]) -> None:
    """Redact these exact values too (kept for the life of the process: a reload may leave old ones in flight)."""
    global _literals, _literal_re
    with _lock:
        new = _literals | {v for v in values if v and len(v) >= MIN_LITERAL}
        if new == _literals:
            return
        _literals = frozenset(new)
        _literal_re = re.compile("|".join(re.escape(v) for v in sorted(_literals, key=len, reverse=True)))


def remember_environment(env: dict[str, str] | None = None) -> None:
    env = dict(os.environ) if env is None else env
    remember(env.get(name) for name in ENV_SECRETS)


def forget_all() -> None:
    """Tests only: drop the remembered literal values."""
    global _literals, _literal_re
    with _lock:
        _literals, _literal_re = frozenset(), None


def redact(text: str) -> str:
    """`text` with every secret it holds replaced by <redacted> (or an id by its first four characters)."""
    low = text.lower()
    hit: dict[int, bool] = {}  # the rules share a few needle tuples: each is searched once
    for needles, pattern, repl in _RULES:
        found = hit.get(id(needles))
        if found is None:
            found = hit[id(needles)] = any(n in low for n in needles)
        if found:
            text = pattern.sub(repl, text)
    literal = _literal_re  # after the rules, so an access key id the rules shortened to AKIA**** stays that way
    if literal is not None:
        text = literal.sub(REDACTED, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with the wrapped formatter, then redacts the whole text (message, arguments, traceback)."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def install(logger: logging.Logger | None = None) -> None:
    """Wrap the formatter of every handler of `logger` (the root by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))


def install_excepthooks() -> None:
    """An uncaught exception's traceback goes to stderr through `sys.excepthook` (and `threading.excepthook` for a
    thread), not through logging: redact those too, so a crash cannot print what a log line could not."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    sys.excepthook = hook
    threading.excepthook = thread_hook


# Loggers of the libraries that talk to the clouds: they log requests, headers and bodies at DEBUG. They stay at
# WARNING unless `--log-level-libraries` asks otherwise, so `--log-level debug` shows the collector's own debugging.
LIBRARY_LOGGERS = (
    "botocore", "aiobotocore", "boto3", "s3transfer", "urllib3", "aiohttp", "requests", "httpx", "httpcore",
    "hpack", "h2", "google", "googleapiclient", "grpc", "azure", "msal", "msrest", "oauthlib", "requests_oauthlib",
)  # fmt: skip


def set_library_level(level: int) -> None:
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
