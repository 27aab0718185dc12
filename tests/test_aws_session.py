"""Identities against moto's STS and S3: a role assumed per account (moto acts in the role's account, so the
caller identity proves which), renewed before it expires, and one wrong credential failing alone."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from botocore.exceptions import BotoCoreError
from services import Moto

from adapters.aws.config import AccountConfig, AwsAuth
from adapters.aws.session import Identity, identities

pytestmark = pytest.mark.integration


def auth(moto: Moto, **kw) -> AwsAuth:
    return AwsAuth(region="us-east-1", endpoint_url=moto.endpoint, **kw)


async def test_role_per_account_with_external_id(moto: Moto) -> None:
    specs = identities(
        auth(moto, role_arn="arn:aws:iam::{account}:role/FlowLogsReader", external_id="ext-1"),
        (AccountConfig("111111111111"), AccountConfig("222222222222", role_arn="arn:aws:iam::222222222222:role/Own")),
    )
    assert [(s.label, s.role_arn, s.external_id) for s in specs] == [
        ("account 111111111111", "arn:aws:iam::111111111111:role/FlowLogsReader", "ext-1"),
        ("account 222222222222", "arn:aws:iam::222222222222:role/Own", "ext-1"),
    ]
    for spec in specs:
        ident = Identity(spec)
        try:
            who = await (await ident.client("sts")).get_caller_identity()
            assert who["Account"] == spec.account
            assert (
                who["Arn"]
                == f"arn:aws:sts::{spec.account}:assumed-role/{spec.role_arn.rsplit('/', 1)[1]}/flowcollector"
            )
        finally:
            await ident.close()


async def test_assumed_role_is_renewed_before_it_expires(moto: Moto, caplog: pytest.LogCaptureFixture) -> None:
    ident = Identity(identities(auth(moto, role_arn="arn:aws:iam::111111111111:role/R"), ())[0])
    try:
        with caplog.at_level(logging.INFO, "flowcollector.aws"):
            sts = await ident.client("sts")
            await sts.get_caller_identity()
            creds = await ident._session.get_credentials()
            first = (await creds.get_frozen_credentials()).access_key
            assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
                "assumed role arn:aws:iam::111111111111:role/R"
            ]
            # Ten minutes before expiry botocore must refresh (mandatory window) on the next call.
            creds._expiry_time = creds._time_fetcher() + timedelta(minutes=5)
            assert creds.refresh_needed()
            await sts.get_caller_identity()
            second = (await creds.get_frozen_credentials()).access_key
        assert len([r for r in caplog.records if "assumed role" in r.getMessage()]) == 2
        assert second != first and not creds.refresh_needed()
    finally:
        await ident.close()


async def test_a_missing_profile_fails_its_account_only(moto: Moto) -> None:
    good, bad = (
        Identity(s)
        for s in identities(auth(moto), (AccountConfig("111111111111"), AccountConfig("222222222222", profile="nope")))
    )
    try:
        assert "Account" in await (await good.client("sts")).get_caller_identity()
        with pytest.raises(BotoCoreError, match="nope"):
            await bad.client("sts")
    finally:
        await good.close()
        await bad.close()
