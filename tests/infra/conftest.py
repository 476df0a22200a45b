"""Fixtures of tests/infra: the client tests' AWS environments, served apps and moto server
(defined in tests/infra/clientfixtures.py next to their helpers)."""

from tests.infra.clientfixtures import (aws_creds, moto_url, no_aws_creds, plain_url, signed_server,  # noqa: F401
                                        tiny_app)
