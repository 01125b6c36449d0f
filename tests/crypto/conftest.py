"""Shared keys for the crypto tests: small keys through the explicit opt-in, made once."""

import pytest

from hefl.crypto import generate_keypair


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024, allow_insecure=True)


@pytest.fixture(scope="session")
def other_keypair():
    return generate_keypair(1024, allow_insecure=True)


@pytest.fixture(scope="session")
def small_keypair():
    return generate_keypair(512, allow_insecure=True)
