"""Asking the hosts: the parallel fan-out, the snapshot of every host, what a plan needs beyond
it (migrate: the guests' disks; rebuild: the hosts' caches), and the pure parsers of what hosts
answer (facts, metadata, the storage scan, qemu-img's disk info)."""
