"""Shared fixtures: real services started once per test session (stopped by PID at the end)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import FakeGcs, Moto, PubSubEmulator, fake_gcs_server, moto_server, pubsub_emulator


@pytest.fixture(scope="session")
def moto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def moto(moto_session: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """A moto server with every backend empty, and dummy credentials in the environment (never real ones)."""
    moto_session.reset()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(Path(os.devnull)))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(os.devnull)))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_session


# --- fake-gcs-server (Google Cloud Storage) ---


@pytest.fixture(scope="session")
def fake_gcs_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture
def fake_gcs(fake_gcs_session: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> FakeGcs:
    """A fake-gcs-server without buckets, and no Google credentials or emulator settings from the environment."""
    fake_gcs_session.reset()
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    return fake_gcs_session


# --- Google Pub/Sub emulator ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pubsub_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    with pubsub_emulator(tmp_path_factory.mktemp("pubsub")) as emulator:
        yield emulator


@pytest.fixture
def pubsub(pubsub_emulator_session: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> PubSubEmulator:
    """The session's Pub/Sub emulator, with PUBSUB_EMULATOR_HOST set for the test (its clients and collectors).
    The emulator keeps topics between tests: each test names its own."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_session.host)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    return pubsub_emulator_session
