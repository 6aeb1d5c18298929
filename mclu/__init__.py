"""mclu: a mini cloud for a handful of KVM hosts, over ssh and libvirt."""

__version__ = "0.1.0"
