"""Asking the hosts: the parallel fan-out, the snapshot of every host, and the pure parsers
of what hosts answer (facts, metadata, the storage scan)."""
