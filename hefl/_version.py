"""The hefl version (one place; parties compare it at the handshake)."""

__version__ = "0.1.0"
