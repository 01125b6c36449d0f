"""VF2Boost: vertical federated gradient boosting."""
