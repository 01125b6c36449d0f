"""pandas DataFrames as party features: names in errors, importances and files; category
columns split one category vs the rest; federated trees identical to the reference."""

import numpy as np
import pytest

from hefl.crypto import generate_keypair
from hefl.errors import ConfigError
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.importance import all_importances
from hefl.protocols.vf2boost.local import fit_local
from hefl.protocols.vf2boost.model import FederatedModel
from hefl.protocols.vf2boost.predict import predict
from hefl.protocols.vf2boost.reference import plaintext_reference

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def frames(adult):
    """Adult's active columns as a DataFrame (workclass and occupation as categories, with
    their missing values) and the passive columns as a plain array."""
    from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS

    train, _ = adult
    rows = np.arange(600)
    cats = train.categories

    def frame(data, rows):
        X = data.select(ADULT_ACTIVE_COLUMNS)[rows]
        df = pd.DataFrame(X, columns=list(ADULT_ACTIVE_COLUMNS))
        for name in ("workclass", "occupation"):
            codes = np.where(np.isnan(df[name]), -1, df[name]).astype(int)
            df[name] = pd.Categorical.from_codes(codes, categories=list(cats[name]))
        return df

    return frame(train, rows), train.select(ADULT_PASSIVE_COLUMNS)[rows], train.y[rows], frame


def test_frames_are_lossless_and_keep_names(frames, tmp_path):
    df, Xp, y, _ = frames
    kp = generate_keypair(512, allow_insecure=True)
    cfg = VF2BoostConfig(n_estimators=3, max_depth=3, key_bits=512, allow_insecure=True,
                         chunk_size=250)  # fmt: skip
    model = fit_local([df, Xp], y, cfg, keypair=kp)
    ref = plaintext_reference([df, Xp], y, cfg)
    assert model.resolved_trees() == ref.resolved_trees()
    np.testing.assert_array_equal(model.predict([df, Xp]), ref.predict([df, Xp]))
    active = model.active
    assert active.feature_names == list(df.columns)
    assert active.binner.categorical.tolist() == [False, True, False, False, False, False, True]
    imp = all_importances(model, "weight")["active"]
    assert set(imp) <= set(df.columns) and imp
    # a categorical split sends exactly one category (and maybe the missing values) left
    used = {f for f, _, _ in active.splits.values()}
    assert used & {1, 6}, "the test data should split on a category column"
    model.save(tmp_path)
    loaded = FederatedModel.load(tmp_path)
    assert loaded.active.feature_names == list(df.columns)
    assert loaded.active.binner.categories == active.binner.categories
    np.testing.assert_array_equal(predict([df, Xp], loaded), ref.predict([df, Xp]))


def test_categories_are_matched_by_name_at_prediction(frames):
    df, Xp, y, _ = frames
    model = plaintext_reference([df, Xp], y, VF2BoostConfig(n_estimators=2, max_depth=3))
    shuffled = df.copy()
    for name in ("workclass", "occupation"):  # same values, categories in another order
        shuffled[name] = shuffled[name].cat.reorder_categories(
            list(reversed(shuffled[name].cat.categories))
        )
    np.testing.assert_array_equal(model.predict([shuffled, Xp]), model.predict([df, Xp]))
    unseen = df.copy()
    unseen["occupation"] = pd.Categorical(["Astronaut"] * len(df))
    missing = df.copy()
    missing["occupation"] = pd.Categorical([None] * len(df), categories=["Astronaut"])
    np.testing.assert_array_equal(model.predict([unseen, Xp]), model.predict([missing, Xp]))


def test_frame_errors_name_the_column(frames):
    df, Xp, y, _ = frames
    cfg = VF2BoostConfig(n_estimators=1)
    bad = df.copy()
    bad["education"] = "x"
    with pytest.raises(ConfigError, match=r"active.*'education'.*dtype"):
        plaintext_reference([bad, Xp], y, cfg)
    const = df.copy()
    const["fnlwgt"] = 1.0
    with pytest.raises(ConfigError, match=r"active.*'fnlwgt'.*constant"):
        fit_local([const, Xp], y, cfg)
    empty = df.copy()
    empty["age"] = np.nan
    with pytest.raises(ConfigError, match=r"'age'.*all missing"):
        plaintext_reference([empty, Xp], y, cfg)
    with pytest.raises(ConfigError, match=r"'workclass'.*8 categories.*max_bin=4"):
        plaintext_reference([df, Xp], y, cfg.replace(max_bin=4))
    with pytest.raises(ConfigError, match=r"active.*'workclass'.*8 categories.*max_bin=4"):
        fit_local([df, Xp], y, cfg.replace(max_bin=4))  # before any party starts
    model = plaintext_reference([df, Xp], y, cfg)
    numeric = df.copy()
    numeric["workclass"] = 1.0
    with pytest.raises(ConfigError, match=r"'workclass' was a category column"):
        model.predict([numeric, Xp])
