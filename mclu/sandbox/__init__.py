"""mclu-sandbox: simulated KVM hosts (namespaces + sshd + libvirtd) on one Linux machine."""
