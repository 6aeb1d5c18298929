"""What the user wrote: the inventory, the template catalogue, template repositories and
their indexes, and the checks of their fields. Pure: no host, no I/O library."""
