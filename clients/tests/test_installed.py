"""When run by tests/client/test_client_distribution.py: the code under test is the installed package."""

from __future__ import annotations

import os

import consofta.billing.client
import consofta.billing.v1.usage_pb2
import pytest


@pytest.mark.skipif(
    not os.environ.get("BILLING_CLIENT_EXPECT_INSTALLED"), reason="only in the fresh-venv distribution test"
)
def test_the_package_under_test_is_the_installed_one() -> None:
    assert "site-packages" in consofta.billing.client.__file__
    assert "site-packages" in consofta.billing.v1.usage_pb2.__file__
