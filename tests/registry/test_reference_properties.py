"""Property-based tests of the image reference parser (hypothesis): every valid reference
round-trips with its fields as written, and any text at all either parses or is a UserError."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from wasmpod.errors import UserError
from wasmpod.reference import ImageReference, parse_reference

LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
PORT = st.integers(min_value=1, max_value=65535).map(lambda port: f":{port}")
COMPONENT = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True)


def with_optional_port(host: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(host, st.one_of(st.just(""), PORT)).map("".join)


REGISTRY = st.one_of(
    with_optional_port(st.lists(LABEL, min_size=2, max_size=4).map(".".join)),  # a dotted name
    with_optional_port(st.just("localhost")),
    st.tuples(LABEL, PORT).map("".join),  # a bare host name needs a port to be a registry
    with_optional_port(st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda parts: ".".join(map(str, parts)))),
    with_optional_port(st.sampled_from(["[::1]", "[2001:db8::1]", "[fe80::a:b]"])),
)
REPOSITORY = st.lists(COMPONENT, min_size=1, max_size=4).map("/".join)
TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
DIGEST = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda hex_digits: f"sha256:{hex_digits}")


@settings(max_examples=400, deadline=None)
@given(REGISTRY, REPOSITORY, st.none() | TAG, st.none() | DIGEST)
def test_valid_references_round_trip_with_their_fields(registry, repository, tag, digest):
    text = f"{registry}/{repository}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    parsed = parse_reference(text)
    assert parsed == ImageReference(registry, repository, tag, digest)
    assert str(parsed) == text


REFERENCE_CHARACTERS = st.sampled_from(list("aZ09.:/@_-[]") + ["sha256:", "localhost", "::", "//", " ", "\n", "é"])


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(), st.lists(REFERENCE_CHARACTERS, max_size=30).map("".join)))
def test_any_text_parses_or_is_a_user_error(text):
    try:
        parsed = parse_reference(text)
    except UserError:
        return
    assert isinstance(parsed, ImageReference)
    assert parse_reference(str(parsed)) == parsed  # what parses, prints as something that parses the same
