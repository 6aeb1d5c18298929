"""Properties of the parsers and validators, over inputs hypothesis makes up.

Each parser raises only its documented error, whatever it is given; what a validator accepts
is exactly its documented grammar and safe where the value goes (a path, a shell word).
"""

from __future__ import annotations

import json
import math
import shlex
import string
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mclu import errors, model, sizes
from mclu.config import fields, inventory, repo_index
from mclu.decide import build as plan
from mclu.hosts.session import command_line
from mclu.model import GuestMeta
from mclu.read import metadata

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def attempt(call: Callable[[], T], error: type[E]) -> T | E:
    """What `call` returns, or the `error` it raised (anything else propagates: a failure)."""
    try:
        return call()
    except error as e:
        return e


FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SURROGATES: tuple[Literal["Cs"], ...] = ("Cs",)  # not text: no file or argv holds them
TEXT = st.text(alphabet=st.characters(blacklist_categories=SURROGATES), max_size=40)

# --- sizes ----------------------------------------------------------------------------------

UNITS = {
    "": 1,
    "B": 1,
    "k": 1 << 10,
    "K": 1 << 10,
    "KiB": 1 << 10,
    "kB": 1000,
    "M": 1 << 20,
    "MiB": 1 << 20,
    "MB": 1000**2,
    "G": 1 << 30,
    "GiB": 1 << 30,
    "GB": 1000**3,
    "T": 1 << 40,
    "TiB": 1 << 40,
    "TB": 1000**4,
}


@FAST
@given(st.integers(min_value=0, max_value=sizes.MAX_SIZE))
def test_sizes_bytes_round_trip(n: int) -> None:
    assert sizes.parse(n) == n
    assert sizes.parse(str(n)) == n
    assert sizes.parse(f" {n} B ") == n


@FAST
@given(
    st.integers(min_value=0, max_value=1 << 20),
    st.sampled_from(sorted(UNITS)),
    st.sampled_from(["", " ", "  "]),
)
def test_sizes_with_units_are_exact(number: int, unit: str, gap: str) -> None:
    expected = number * UNITS[unit]
    text = f"{number}{gap}{unit}"
    if expected <= sizes.MAX_SIZE:
        assert sizes.parse(text) == expected
        assert sizes.parse(text.lower()) == expected  # units are case-insensitive
    else:
        with pytest.raises(ValueError, match="out of range"):
            sizes.parse(text)


@FAST
@given(st.integers(min_value=0, max_value=sizes.MAX_SIZE))
def test_sizes_human_reads_back_within_its_rounding(n: int) -> None:
    back = sizes.parse(sizes.human(n))
    # Three significant digits round by up to 0.5 %, and parse drops the fraction of a byte.
    assert abs(back - n) <= n * 0.005 + 1
    assert sizes.human(back) == sizes.human(n)


@FAST
@given(
    st.one_of(
        TEXT,
        st.text(alphabet="0123456789.-+eE kKmMgGtTiIbB_\t\n", max_size=40),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.lists(st.integers()),
    )
)
def test_sizes_garbage_raises_only_value_error(value: object) -> None:
    n = attempt(lambda: sizes.parse(value), ValueError)
    if isinstance(n, ValueError):
        assert "\n" not in str(n) and len(str(n)) < 120  # fit for a one-line error
    else:
        assert isinstance(n, int) and 0 <= n <= sizes.MAX_SIZE


# --- guest names ----------------------------------------------------------------------------

NAME_FIRST = string.ascii_letters + string.digits
NAME_REST = NAME_FIRST + "._-"


def documented_name(text: str) -> bool:
    """docs: 1 to 63 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return 1 <= len(text) <= 63 and text[0] in NAME_FIRST and all(c in NAME_REST for c in text[1:])


NEAR_NAMES = st.one_of(
    TEXT,
    st.text(alphabet=NAME_REST + "/ $;`'\"\n\\:|&*?é\x00", max_size=70),
    st.text(alphabet=NAME_REST, min_size=60, max_size=66),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
)


@FAST
@given(NEAR_NAMES)
def test_guest_name_grammar_is_exactly_the_documented_one(text: str) -> None:
    accepted = fields.GUEST_NAME.fullmatch(text) is not None
    assert accepted == documented_name(text)
    if accepted:
        # a path component: never empty, "." or "..", no separator, no NUL, no option
        assert text not in (".", "..") and "/" not in text and "\x00" not in text
        assert not text.startswith("-")
        # a shell word: nothing to quote
        assert shlex.quote(text) == text and shlex.split(text) == [text]


@FAST
@given(NEAR_NAMES)
def test_build_refuses_every_name_outside_the_grammar(text: str) -> None:
    name, host = plan.split_name(text)
    if documented_name(name) and (host is None or documented_name(host)):
        return
    with pytest.raises(errors.InvalidGuestName):
        plan.plan_build(
            plan.BuildRequest("t", (text,)),
            _EMPTY_SNAPSHOT,
            {},
            _TEMPLATE,
            now="2026-01-01T00:00:00Z",
        )


# --- the inventory --------------------------------------------------------------------------

KNOWN_HOST_KEYS = [
    "address",
    "user",
    "port",
    "mac",
    "tags",
    "domain_type",
    "image_dir",
    "reserve_memory",
    "cpus",
    "cpu_ratio",
    "tcp_timeout",
    "connect_timeout",
    "identity_file",
    "known_hosts",
    "power_off_command",
    "wol_address",
    "wol_port",
    "network",
    "shared_storage",
    "uri",
    "libvirt_socket",
]
SCALARS = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "",
            "ham0",
            "10.0.0.1",
            "2 GiB",
            "kvm",
            "user",
            "/srv/images",
            "52:54:00:12:34:56",
            "-oProxyCommand=x",
            "a\nb",
        ]
    ),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
HOST_TABLE = st.dictionaries(st.one_of(st.sampled_from(KNOWN_HOST_KEYS), TEXT), VALUES, max_size=5)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "hosts": st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(["ham0", "a.b", "-x"]), TEXT),
                st.one_of(HOST_TABLE, VALUES),
                max_size=3,
            ),
            VALUES,
        ),
        "defaults": st.one_of(HOST_TABLE, VALUES),
        "parallel": VALUES,
        "template_repos": VALUES,
    },
).flatmap(lambda doc: st.dictionaries(TEXT, VALUES, max_size=2).map(lambda x: {**x, **doc}))


def toml(value: Any) -> str:
    """A TOML value written inline (tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml(v)}\n" for k, v in doc.items())


def check_inventory(text: str) -> None:
    inv = attempt(lambda: inventory.parse(text, "hosts.toml"), errors.ConfigError)
    if isinstance(inv, errors.ConfigError):
        assert str(inv).startswith("hosts.toml: ") and "\n" not in str(inv)
        return
    for host in inv.hosts:  # whatever got through is what the grammar allows
        assert inventory.HOST_NAME.fullmatch(host.name)
        assert not host.address.startswith("-") and "@" not in host.address
        assert host.user is None or inventory.USER.fullmatch(host.user)


@FAST
@given(DOCUMENTS)
def test_inventory_of_any_toml_document_raises_only_config_error(doc: dict[str, Any]) -> None:
    check_inventory(toml_document(doc))


TOML_BITS = [
    *"[]{}=\"'.,#\n abcdhost01:-\\",
    "[hosts.a]\n",
    "port = ",
    "[defaults]\n",
    '"""',
    "'''",
    "tags = [",
    "inf",
    "1979-05-27T07:32:00Z",
]


@FAST
@given(st.lists(st.sampled_from(TOML_BITS), max_size=40).map("".join))
def test_inventory_of_any_text_raises_only_config_error(text: str) -> None:
    check_inventory(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


@FAST
@given(data=st.binary(max_size=200))
def test_inventory_file_of_any_bytes_raises_only_config_error(scratch: Path, data: bytes) -> None:
    path = scratch / "hosts.toml"
    path.write_bytes(data)
    inv = attempt(lambda: inventory.load(path), errors.ConfigError)
    if isinstance(inv, errors.ConfigError):
        assert str(inv).startswith(f"{path}: ") and "\n" not in str(inv)
    else:
        assert inv.hosts


# --- virt-builder indexes and sources --------------------------------------------------------

INDEX_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "[a]",
                "[b c]",
                "[../x]",
                "[a]]",
                "#",
                "# c",
                "",
                " ",
                " cont",
                "-----BEGIN PGP SIGNED MESSAGE-----",
                "-----BEGIN PGP SIGNATURE-----",
                "file=a.xz",
                "file=",
                "file=http://[::1",
                "size=1",
                "size=-1",
                "size=x",
                "revision=2",
                "arch=x86_64",
                "arch=../x",
                "format=qcow2",
                "format=vmdk",
                "checksum[sha512]=" + "0" * 128,
                "checksum[sha512]=00",
                "hidden=true",
                "compressed_size=10",
                "uri=file:///srv/index",
                "gpgkey=x",
                "format=native",
                "==",
                "a[b]=c",
                "x[=y",
            ]
        ),
        TEXT.map(lambda t: t.replace("\n", " ")),
    ),
    max_size=12,
).map("\n".join)


@FAST
@given(st.one_of(INDEX_LINES, TEXT))
def test_index_parser_raises_only_config_error(text: str) -> None:
    entries = attempt(
        lambda: repo_index.parse_index(text, "https://example.org/index.asc"), errors.ConfigError
    )
    if isinstance(entries, errors.ConfigError):
        assert "\n" not in str(entries)
        return
    for entry in entries:  # a name and arch become a file name on every host
        assert repo_index.NAME.fullmatch(entry.name) and repo_index.NAME.fullmatch(entry.arch)
        assert entry.size >= 0 and entry.revision >= 0


@FAST
@given(st.one_of(INDEX_LINES, TEXT))
def test_sources_parser_raises_only_config_error(text: str) -> None:
    sources = attempt(lambda: repo_index.parse_sources(text, "repos.d/x.conf"), errors.ConfigError)
    if isinstance(sources, errors.ConfigError):
        assert str(sources).startswith("repos.d/x.conf: ") and "\n" not in str(sources)
        return
    assert all(s.uri.strip() for s in sources)


# --- mclu's metadata in domain XML ------------------------------------------------------------

NOT_XML: tuple[Literal["Cs", "Cc"], ...] = ("Cs", "Cc")
XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=NOT_XML, blacklist_characters="\ufffe\uffff"),
    max_size=20,
)


@FAST
@given(
    st.one_of(
        TEXT,
        st.text(alphabet="<>/=\"' guestmplaionrvsd:x", max_size=60),
        st.sampled_from(
            [
                '<guest template="t"/>',
                "<guest/>",
                "<x/>",
                "<guest",
                '<m:guest xmlns:m="urn:x" template="t"/>',
            ]
        ),
    )
)
def test_metadata_parse_raises_only_metadata_error(text: str) -> None:
    meta = attempt(lambda: metadata.parse(text), metadata.MetadataError)
    assert isinstance(meta, metadata.MetadataError) or meta.template


@FAST
@given(
    st.builds(
        GuestMeta,
        template=XML_TEXT.filter(bool),
        revision=XML_TEXT,
        built=XML_TEXT,
        state=XML_TEXT.filter(bool),
        options=st.lists(st.tuples(XML_TEXT, XML_TEXT), max_size=3).map(tuple),
    )
)
def test_metadata_round_trips(meta: GuestMeta) -> None:
    assert metadata.parse(metadata.render(meta)) == meta
    assert metadata.parse(metadata.render_for_set_metadata(meta)) == meta


# --- the one place argv becomes a remote command line ----------------------------------------


SHELL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=SURROGATES, blacklist_characters="\x00"),
    max_size=12,
)
ARGVS = st.lists(
    st.one_of(SHELL_TEXT, st.text(alphabet=" \t\n'\"\\$`;|&<>(){}*?!#~-=%", max_size=12)),
    min_size=1,
    max_size=8,
)


@FAST
@given(ARGVS)
def test_command_line_quotes_every_argv(argv: list[str]) -> None:
    assert shlex.split(command_line(argv)) == argv


@settings(max_examples=60, deadline=None)
@given(ARGVS)
def test_a_real_shell_runs_exactly_argv(argv: list[str]) -> None:
    """What sshd does with the line: `sh -c LINE`; printf shows the words the shell made."""
    done = subprocess.run(
        ["sh", "-c", command_line(["printf", "%s\\0", *argv])], capture_output=True, check=True
    )
    assert done.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1] == argv


# --- helpers for the build check ---------------------------------------------------------------


def _template() -> Any:
    from mclu.model import BaseImage, ResolvedTemplate

    return ResolvedTemplate(
        name="t",
        base=BaseImage(template="t", revision=1, arch="x86_64", size=1 << 20),
        source_uri="file:///t.raw",
        sha512="0" * 128,
        memory=64 << 20,
    )


def _empty_snapshot() -> Any:

    return model.HostResults[Any]()


_TEMPLATE = _template()
_EMPTY_SNAPSHOT = _empty_snapshot()
