"""Carrying plans out on hosts: the executors with their undo, lifecycle, power, locks,
console, and waiting until a guest is ready."""
