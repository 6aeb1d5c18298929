"""mclu's own record in a guest's libvirt metadata: the `<mclu:guest>` element.

mclu keeps no state of its own: what it knows about a guest (template, build time, options)
lives in the domain XML under mclu's namespace, so any client reading libvirt sees it.

    <metadata>
      <mclu:guest xmlns:mclu="https://mclu.dev/xmlns/guest/1"
                  template="debian-12" revision="3" built="2024-05-01T10:00:00Z" state="ready"
                  ready="ssh" addresses="10.0.0.5" ssh-server="sshd">
        <mclu:option name="disk">10G</mclu:option>
        <mclu:hostkey>ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...</mclu:hostkey>
      </mclu:guest>

The `hostkey` elements are the public halves of the ssh host keys mclu generated for the guest
(`mclu ssh` checks the guest against exactly these); `ssh-server` the ssh server
personalisation found in its disk, `addresses` its addresses when it became ready.
    </metadata>

Pure: no libvirt import, strings in and out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from mclu.model import GuestMeta

NAMESPACE = "https://mclu.dev/xmlns/guest/1"
PREFIX = "mclu"
ELEMENT = "guest"
_OPTION = "option"
_HOSTKEY = "hostkey"


class MetadataError(ValueError):
    """The mclu metadata element is not one mclu wrote."""


def render(meta: GuestMeta) -> str:
    """The `<mclu:guest>` element with its namespace declared, to embed in domain XML."""
    return _render(meta, f"{PREFIX}:", f" xmlns:{PREFIX}={quoteattr(NAMESPACE)}")


def render_for_set_metadata(meta: GuestMeta) -> str:
    """The element without prefix, for `virDomainSetMetadata(..., key=PREFIX, uri=NAMESPACE)`.

    libvirt puts the element and its children in the namespace itself and refuses an element
    that already carries a prefix ("failed to create a new XML namespace", libvirt 9.0).
    """
    return _render(meta, "", "")


def parse(text: str) -> GuestMeta:
    """Read a `<guest>` element, in mclu's namespace or bare (as virDomainGetMetadata returns it).

    Raises MetadataError if the text is not XML or not a guest element with a template.
    """
    try:
        element = ET.fromstring(text)
    except ET.ParseError as e:
        raise MetadataError(f"mclu metadata is not XML: {e}") from None
    return from_element(element)


def find_in_domain(domain: ET.Element) -> GuestMeta | None:
    """mclu's record in a parsed `<domain>` element, or None for a guest mclu did not make."""
    element = domain.find(f"metadata/{{{NAMESPACE}}}{ELEMENT}")
    return None if element is None else from_element(element)


def from_element(element: ET.Element) -> GuestMeta:
    """Read a parsed `<guest>` element; raises MetadataError when it is not mclu's."""
    namespace = _namespace_of(element)
    if _local_name(element) != ELEMENT or namespace not in ("", NAMESPACE):
        raise MetadataError(f"expected a <{ELEMENT}> element in {NAMESPACE}, got {element.tag}")
    template = element.get("template")
    if not template:
        raise MetadataError("mclu metadata has no template attribute")
    option_tag = f"{{{namespace}}}{_OPTION}" if namespace else _OPTION
    options = tuple((o.get("name", ""), o.text or "") for o in element.findall(option_tag))
    hostkey_tag = f"{{{namespace}}}{_HOSTKEY}" if namespace else _HOSTKEY
    host_keys = tuple(" ".join((k.text or "").split()) for k in element.findall(hostkey_tag))
    defaults = GuestMeta(template=template)
    return GuestMeta(
        template=template,
        revision=element.get("revision", defaults.revision),
        built=element.get("built", defaults.built),
        state=element.get("state", defaults.state),
        options=options,
        ready=element.get("ready", defaults.ready),
        host_keys=tuple(k for k in host_keys if k),
        addresses=tuple(element.get("addresses", "").split()),
        ssh_server=element.get("ssh-server", defaults.ssh_server),
    )


def _render(meta: GuestMeta, prefix: str, declaration: str) -> str:
    attributes = [
        ("template", meta.template),
        ("revision", meta.revision),
        ("built", meta.built),
        ("state", meta.state),
        ("ready", meta.ready),
        ("addresses", " ".join(meta.addresses)),
        ("ssh-server", meta.ssh_server),
    ]
    # Empty values are left out; parse() reads a missing attribute as GuestMeta's default.
    text = "".join(f" {key}={quoteattr(value)}" for key, value in attributes if value)
    options = "".join(
        f"<{prefix}{_OPTION} name={quoteattr(name)}>{escape(value)}</{prefix}{_OPTION}>"
        for name, value in meta.options
    )
    options += "".join(
        f"<{prefix}{_HOSTKEY}>{escape(key)}</{prefix}{_HOSTKEY}>" for key in meta.host_keys
    )
    return f"<{prefix}{ELEMENT}{declaration}{text}>{options}</{prefix}{ELEMENT}>"


def _local_name(element: ET.Element) -> str:
    return element.tag.rpartition("}")[2]


def _namespace_of(element: ET.Element) -> str:
    return element.tag[1:].partition("}")[0] if element.tag.startswith("{") else ""
