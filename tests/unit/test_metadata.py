"""mclu.read.metadata: the <mclu:guest> element, rendered and read back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mclu.model import GuestMeta
from mclu.read import metadata

DATA = Path(__file__).parent.parent / "data" / "facts" / "metadata"

FULL = GuestMeta(
    template="debian-12",
    revision="3",
    built="2024-05-01T10:00:00Z",
    state="building",
    options=(("disk", "10G"), ("note", "a <b> & 'c'")),
)


def meta_from_json(path: Path) -> GuestMeta:
    data: dict[str, Any] = json.loads(path.read_text())
    return GuestMeta(
        **{
            **data,
            "options": tuple(tuple(o) for o in data["options"]),
            "host_keys": tuple(data.get("host_keys", ())),
        }
    )


def test_render_matches_the_recorded_text() -> None:
    expected = (DATA / "render-building.xml").read_text().strip()
    assert metadata.render(meta_from_json(DATA / "render-building.json")) == expected


def test_parse_what_libvirt_get_metadata_returns() -> None:
    text = (DATA / "get-metadata-building.xml").read_text()
    assert metadata.parse(text) == meta_from_json(DATA / "get-metadata-building.json")


@pytest.mark.parametrize(
    "meta",
    [FULL, GuestMeta(template="alpine"), GuestMeta(template="x", options=(("a", ""), ("a", "2")))],
)
@pytest.mark.parametrize("render", [metadata.render, metadata.render_for_set_metadata])
def test_round_trip(meta: GuestMeta, render: Any) -> None:
    assert metadata.parse(render(meta)) == meta


def test_rendered_element_is_in_mclus_namespace() -> None:
    element = ET.fromstring(metadata.render(FULL))
    assert element.tag == "{https://mclu.dev/xmlns/guest/1}guest"
    assert [child.tag for child in element] == ["{https://mclu.dev/xmlns/guest/1}option"] * 2


def test_for_set_metadata_has_no_prefix() -> None:
    # libvirt refuses a prefixed root: "failed to create a new XML namespace".
    assert metadata.render_for_set_metadata(FULL).startswith("<guest template=")


def test_find_in_domain() -> None:
    domain = ET.fromstring(
        f"<domain><metadata><other xmlns='urn:x'/>{metadata.render(FULL)}</metadata></domain>"
    )
    assert metadata.find_in_domain(domain) == FULL


def test_find_in_domain_of_a_guest_mclu_did_not_make() -> None:
    domain = ET.fromstring("<domain><metadata><guest template='t'/></metadata></domain>")
    assert metadata.find_in_domain(domain) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<guest", "not XML"),
        ("<other template='t'/>", "expected a <guest>"),
        ("<guest xmlns='urn:someone-else' template='t'/>", "expected a <guest>"),
        ("<guest state='ready'/>", "no template"),
    ],
)
def test_parse_refuses_what_mclu_did_not_write(text: str, message: str) -> None:
    with pytest.raises(metadata.MetadataError, match=message):
        metadata.parse(text)


def test_host_keys_render_as_the_recorded_text() -> None:
    expected = (DATA / "render-hostkeys.xml").read_text().strip()
    assert metadata.render(meta_from_json(DATA / "render-hostkeys.json")) == expected


def test_host_keys_parse_from_what_libvirt_returns_whitespace_and_all() -> None:
    text = (DATA / "get-metadata-hostkeys.xml").read_text()
    meta = metadata.parse(text)
    assert meta == meta_from_json(DATA / "get-metadata-hostkeys.json")
    assert [k.split()[0] for k in meta.host_keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]


@pytest.mark.parametrize("render", [metadata.render, metadata.render_for_set_metadata])
def test_host_keys_round_trip(render: Any) -> None:
    meta = meta_from_json(DATA / "render-hostkeys.json")
    assert metadata.parse(render(meta)) == meta
    assert metadata.parse(render(meta)).host_keys == meta.host_keys != ()


@pytest.mark.parametrize("render", [metadata.render, metadata.render_for_set_metadata])
def test_the_ssh_server_found_in_the_disk_round_trips(render: Any) -> None:
    meta = GuestMeta(template="tiny", ready="ssh", ssh_server="dropbear", addresses=("10.0.0.5",))
    assert ' ssh-server="dropbear"' in render(meta)
    assert metadata.parse(render(meta)) == meta
    # A guest recorded before mclu looked for one: no attribute, none known.
    assert "ssh-server" not in render(GuestMeta(template="tiny"))
    assert metadata.parse(render(GuestMeta(template="tiny"))).ssh_server == ""
