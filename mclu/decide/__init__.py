"""Pure deciding: placement, domain XML, readiness rules and one planner per command.

Nothing here imports a session, an image transport, asyncssh or libvirt (import-linter checks
it in `make lint`): a planner is a function of a request and a snapshot of all hosts.
"""
