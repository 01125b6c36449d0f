"""``frac_bits="auto"``: the most precision (<= 53 bits) the bit-budget planner proves safe for
the rows, classes, key and layout; the same at every party and in the plaintext reference,
agreed on at the greeting and kept by checkpoints. An explicit value that does not fit is
refused naming what would."""

import functools

import numpy as np
import pytest

import hefl
from hefl.crypto import generate_keypair
from hefl.errors import ConfigError, PackingOverflowError, PeerFailed
from hefl.protocols.vf2boost import active_party, passive_party
from hefl.protocols.vf2boost.budget import BitBudgetError, largest_frac_bits, plan_bits
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.local import fit
from hefl.protocols.vf2boost.reference import plaintext_reference

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kp1024():
    return generate_keypair(1024, allow_insecure=True)


def digits_like(n=300, K=10, seed=0):
    """8×8 'images' of K classes (each a noisy class template, values 0..16) split into two
    parties' 32 columns: sklearn's digits in shape and range."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 17, (K, 64)).astype(float)
    y = np.arange(n) % K
    X = np.clip(np.rint(templates[y] + rng.normal(0, 4, (n, 64))), 0, 16)
    return [X[:, :32], X[:, 32:]], y


def ten_classes(**kw):
    base = {
        "objective": "multi:softprob",
        "num_class": 10,
        "n_estimators": 2,
        "max_depth": 2,
        "multi_strategy": "multi_output_tree",
        "key_bits": 1024,
        "allow_insecure": True,
    }
    return VF2BoostConfig(**{**base, **kw})


def test_ten_classes_on_a_1024_bit_key_run_with_the_defaults(kp1024):
    X_parts, y = digits_like()
    cfg = ten_classes()
    assert cfg.frac_bits == "auto"
    res = fit(X_parts, y, cfg, keypair=kp1024)
    # 300 rows (b = 9), 10 lanes of 2F + 20 bits, two Horner slots in 1022 bits: F = 15
    assert res.config is not None and res.config.frac_bits == 15
    ref = plaintext_reference(X_parts, y, cfg)
    assert res.model.resolved_trees() == ref.resolved_trees()
    np.testing.assert_array_equal(res.model.predict_proba(X_parts), ref.predict_proba(X_parts))
    assert (res.model.predict_proba(X_parts).argmax(axis=1) == y).mean() > 0.5
    # the reference quantized at 15 bits too: at 14 bits its trees differ
    assert plaintext_reference(X_parts, y, cfg.replace(frac_bits=14)).resolved_trees() != (
        ref.resolved_trees()
    )


def test_an_explicit_frac_bits_that_does_not_fit_is_refused_naming_what_fits(kp1024):
    X_parts, y = digits_like()
    cfg = ten_classes(frac_bits=53)
    want = r"frac_bits=53 does not fit.*1024-bit key.*frac_bits=15 fits"
    with pytest.raises(ConfigError, match=want) as info:
        fit(X_parts, y, cfg, keypair=kp1024)
    assert isinstance(info.value, PackingOverflowError)  # what it always was
    with pytest.raises(BitBudgetError, match=want):
        plaintext_reference(X_parts, y, cfg)
    # a value that fits is kept as given
    assert cfg.replace(frac_bits=12).resolve(len(y)).frac_bits == 12


def test_auto_picks_the_largest_safe_precision_for_each_layout():
    # one class, 2048-bit keys: the full 53 bits, as the old default
    assert VF2BoostConfig().resolve(32561).frac_bits == 53
    assert VF2BoostConfig(objective="reg:squarederror").resolve(10**6).frac_bits == 53
    many = VF2BoostConfig(
        objective="multi:softprob", num_class=16, multi_strategy="multi_output_tree"
    )
    serial = VF2BoostConfig.serial_baseline(
        objective="multi:softprob", num_class=16, multi_strategy="multi_output_tree"
    )
    got = {}
    for name, cfg in {
        "packed": many,
        "packed-unpacked-hists": many.replace(pack_histograms=False),
        "pair": many.replace(pack_gh=False),
        "pair-unpacked-hists": many.replace(pack_gh=False, pack_histograms=False),
        "serial": serial,
    }.items():
        F = got[name] = cfg.resolve(5000).frac_bits
        layout = {
            "pack_gh": cfg.pack_gh,
            "pack_histograms": cfg.pack_histograms,
            "h_log2": -1,
            "classes": 16,
            "encoding": cfg.encoding,
        }
        plan_bits(5000, F, 2048, **layout)  # fits
        if F < 53:  # and one more bit would not
            with pytest.raises(BitBudgetError):
                plan_bits(5000, F + 1, 2048, **layout)
    # 5000 rows (b = 13): 16 lanes of 2F + 28 bits (g‖h) or F + 15 bits (g and h apart)
    assert got == {
        "packed": 17,
        "packed-unpacked-hists": 49,
        "pair": 48,
        "pair-unpacked-hists": 53,
        "serial": 53,
    }
    assert largest_frac_bits(2**100, 256, pack_gh=True, pack_histograms=True) is None


def test_auto_packs_histogram_entries_alone_when_two_never_fit():
    """32 lanes cannot sit twice in a 2048-bit plaintext at any precision: "auto" then sends
    one K-lane entry per ciphertext (recorded as pack_histograms=False) rather than refusing
    the default config."""
    cfg = VF2BoostConfig(
        objective="multi:softprob", num_class=32, multi_strategy="multi_output_tree"
    )
    with pytest.raises(BitBudgetError):
        plan_bits(5000, 8, 2048, pack_gh=True, pack_histograms=True, h_log2=-1, classes=32)
    resolved = cfg.resolve(5000)
    assert (resolved.frac_bits, resolved.pack_histograms) == (17, False)
    # an explicit precision keeps the layout asked for, and is refused naming what fits
    with pytest.raises(
        ConfigError,
        match=r"frac_bits=17 does not fit.*pack_histograms=False "
        r"fits frac_bits=17; pack_gh=False and pack_histograms=False fits "
        r"frac_bits=48",
    ):
        cfg.replace(frac_bits=17).resolve(5000)
    small = cfg.replace(key_bits=512, allow_insecure=True)
    for c in (small, small.replace(pack_gh=False, pack_histograms=False)):
        with pytest.raises(ConfigError, match=r"'auto': no precision of 8 to 53.*larger key"):
            c.resolve(1000)
    phe = small.replace(encoding="phe", pack_gh=False, pack_histograms=False)
    assert phe.resolve(1000).frac_bits == 53  # one class per ciphertext: nothing to share


def test_the_fallback_trains_identically_to_the_reference():
    X_parts, y = digits_like(n=300, K=8)
    kp = generate_keypair(512, allow_insecure=True)
    cfg = ten_classes(num_class=8, key_bits=512)
    res = fit(X_parts, y, cfg, keypair=kp)
    assert (res.config.frac_bits, res.config.pack_histograms) == (21, False)
    ref = plaintext_reference(X_parts, y, cfg)
    assert res.model.resolved_trees() == ref.resolved_trees()


@pytest.mark.parametrize("value", ["high", 7, 63, True, 20.0, None])
def test_frac_bits_must_be_auto_or_an_int(value):
    with pytest.raises(ConfigError, match="frac_bits"):
        VF2BoostConfig(frac_bits=value)


def test_auto_is_kept_in_config_files_and_resolved_only_with_the_rows():
    cfg = VF2BoostConfig.from_dict({"frac_bits": "auto"})
    assert cfg.to_dict()["frac_bits"] == "auto" and VF2BoostConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="resolve"):
        _ = cfg.resolved_frac_bits
    with pytest.raises(ConfigError, match="frac_bits"):
        VF2BoostConfig(encoding="phe", pack_gh=False, pack_histograms=False, frac_bits=54)


def test_parties_that_resolve_differently_are_refused_at_the_greeting(kp1024):
    """A passive party given an explicit frac_bits other than what "auto" resolves to at the
    active party: the active party names the field before any key is sent."""
    X_parts, y = digits_like()
    cfg = ten_classes()
    roles = {
        "active": functools.partial(active_party, X=X_parts[0], y=y, cfg=cfg, keypair=kp1024),
        "passive1": functools.partial(passive_party, X=X_parts[1], cfg=cfg.replace(frac_bits=14)),
    }
    with pytest.raises(PeerFailed, match=r"different VF2BoostConfig.*\['frac_bits'\]"):
        hefl.run(roles, executor="inline", timeout=60)


@pytest.mark.timeout(90)
def test_a_checkpoint_of_an_explicit_precision_resumes_with_auto(tmp_path, kp1024):
    """ "auto" resolves to the same int for the same rows, key and layout, so a training started
    with that int continues under "auto" (the checkpoint holds the resolved config), and one
    with another precision is refused."""
    X_parts, y = digits_like(n=200, K=3)
    cfg = ten_classes(num_class=3, n_estimators=3, key_bits=512)
    F = cfg.resolve(len(y)).frac_bits
    whole = fit(X_parts, y, cfg, executor="thread")
    fit(
        X_parts,
        y,
        cfg.replace(n_estimators=2, frac_bits=F),
        executor="thread",
        checkpoint_dir=tmp_path,
    )
    resumed = fit(X_parts, y, cfg, executor="thread", checkpoint_dir=tmp_path, resume=True)
    assert [p.to_json() for p in resumed.model.parties] == [
        p.to_json() for p in whole.model.parties
    ]
    assert len(resumed.tree_seconds) == 1
    with pytest.raises(ConfigError, match=rf"'frac_bits': {F} there, {F - 1} now"):
        fit(
            X_parts,
            y,
            cfg.replace(frac_bits=F - 1),
            executor="thread",
            checkpoint_dir=tmp_path,
            resume=True,
        )
