"""Federated protocols built on the hefl runtime and crypto core."""
