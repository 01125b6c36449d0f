import numpy as np
import pytest

from hefl import ConfigError
from hefl.data import ADULT_ACTIVE_COLUMNS, adult_design_matrix, load_adult


def test_adult_official_split_sizes_and_label_rate():
    train, test = load_adult("train"), load_adult("test")
    assert train.X.shape == (32561, 14)
    assert test.X.shape == (16281, 14)
    assert abs(train.y.mean() - 0.2408) < 0.001
    assert set(np.unique(test.y)) == {0, 1}
    # codes agree across splits: the same category index names the same string
    assert train.categories == test.categories
    assert np.isnan(train.X).any()  # '?' is kept as missing, not silently imputed


def test_select_and_design_matrix():
    train, test = load_adult("train"), load_adult("test")
    assert train.select(ADULT_ACTIVE_COLUMNS).shape == (32561, 7)
    with pytest.raises(ConfigError, match="unknown column"):
        train.select(["nope"])
    a, b, names = adult_design_matrix(train, test)
    assert a.shape[1] == b.shape[1] == len(names)
    assert np.isfinite(a).all() and np.isfinite(b).all()


def test_bad_split():
    with pytest.raises(ConfigError, match="split"):
        load_adult("validation")


def test_adult_vertical_parts():
    from hefl.data import ADULT_PASSIVE_COLUMNS, adult_vertical_parts

    data = load_adult("test")
    two = adult_vertical_parts(data)
    np.testing.assert_array_equal(two[0], data.select(ADULT_ACTIVE_COLUMNS))
    np.testing.assert_array_equal(two[1], data.select(ADULT_PASSIVE_COLUMNS))
    three = adult_vertical_parts(data, 3)
    assert [p.shape[1] for p in three] == [7, 4, 3]
    np.testing.assert_array_equal(np.hstack(three[1:]), two[1])
    with pytest.raises(ConfigError, match=r"2\.\.8 parties"):
        adult_vertical_parts(data, 1)
