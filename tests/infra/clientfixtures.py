"""Fixtures for the client tests (imported by name by the test modules): AWS credentials in the
environment, and the real app over a tiny bundle on loopback, plain and behind a SigV4 check."""

from __future__ import annotations

import pytest

from tests.infra.servers import TEST_KEY_ID, TEST_REGION, TEST_SECRET, SigV4Check, serve

_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "MODELFN_URL", "MODELFN_API_KEY")


@pytest.fixture
def no_aws_creds(monkeypatch, tmp_path):
    """An environment where the AWS credential chain finds nothing and reaches nothing."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def aws_creds(no_aws_creds, monkeypatch):
    """Static test credentials the SigV4 check knows."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)


@pytest.fixture(scope="session")
def tiny_app(tiny_bundle):
    """The real app (functions.app.create_app) over a tiny feature-extraction bundle, served as "tiny"."""
    from functions.app import create_app

    return create_app(tiny_bundle("feature-extraction"), name="tiny", version="1")


@pytest.fixture(scope="session")
def plain_url(tiny_app):
    """The tiny app on loopback, no auth (as `modelfn serve` or `sam local start-api`)."""
    with serve(tiny_app) as url:
        yield url


@pytest.fixture(scope="session")
def signed_server(tiny_app):
    """(base URL, check): the tiny app behind an IAM-auth check, under a /prod stage prefix."""
    check = SigV4Check(tiny_app, prefix="/prod")
    with serve(check) as url:
        yield url + "/prod", check
