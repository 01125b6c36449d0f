"""VF2Boost: vertical federated gradient boosting (lossless SecureBoost, made fast).

The active party holds the labels, some features and the only Paillier private key; passive
parties hold other features of the same (aligned) rows. The result is exactly the model
:func:`plaintext_reference` trains on the same bins without encryption.

Entry points:
    fit(X_parts, y, cfg, transport=..., processes=...) -> FitResult
    fit_local(X_parts, y, cfg) -> FederatedModel
    active_party(party, X, y, cfg) / passive_party(party, X, cfg)   roles for hefl.run
    predict(X_parts, model) / predict_active / predict_passive       federated prediction
    plaintext_reference(X_parts, y, cfg) -> FederatedModel           the oracle
"""

from hefl.protocols.vf2boost.active import active_party
from hefl.protocols.vf2boost.binning import Binner
from hefl.protocols.vf2boost.budget import BitBudgetError, BitPlan, largest_frac_bits, plan_bits
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.local import FitResult, fit, fit_local
from hefl.protocols.vf2boost.metrics import roc_auc
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel, TreeStructure
from hefl.protocols.vf2boost.passive import passive_party
from hefl.protocols.vf2boost.predict import predict, predict_active, predict_passive
from hefl.protocols.vf2boost.reference import plaintext_reference

__all__ = [
    "Binner",
    "BitBudgetError",
    "BitPlan",
    "FederatedModel",
    "FitResult",
    "PartyModel",
    "TreeStructure",
    "VF2BoostConfig",
    "active_party",
    "fit",
    "fit_local",
    "largest_frac_bits",
    "passive_party",
    "plaintext_reference",
    "plan_bits",
    "predict",
    "predict_active",
    "predict_passive",
    "roc_auc",
]
