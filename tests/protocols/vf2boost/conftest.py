"""Shared Adult data for the VF2Boost tests (loaded once per session)."""

import numpy as np
import pytest

from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS, load_adult


@pytest.fixture(scope="session")
def adult():
    return load_adult("train"), load_adult("test")


@pytest.fixture(scope="session")
def adult_small(adult):
    """2,000 training rows, split vertically into 2 and 3 parties."""
    train, _ = adult
    rng = np.random.default_rng(7)
    rows = np.sort(rng.choice(len(train.y), 2000, replace=False))
    Xa = train.select(ADULT_ACTIVE_COLUMNS)[rows]
    Xp = train.select(ADULT_PASSIVE_COLUMNS)[rows]
    two = [Xa, Xp]
    three = [Xa, Xp[:, :4], Xp[:, 4:]]
    return two, three, train.y[rows]
