"""Transports: how parties move frames (in-process queues, ZeroMQ)."""
