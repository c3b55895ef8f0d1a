"""The masking engine's fast paths give exactly what the plain definitions give.

Each fast path (kept for the throughput goal, see docs/masking.md) is checked against an oracle:
the textbook definition, or the previous, straightforward implementation kept here verbatim.
Hypothesis generates the inputs; ``derandomize`` makes every run the same.
"""

from __future__ import annotations

import hashlib
import hmac
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_hoop.gateway.masking.detectors import (
    IBAN_LENGTHS,
    _card,
    _iban,
    iban_ok,
    luhn_ok,
)
from airflow_hoop.gateway.masking.engine import ColumnInfo, MaskingEngine, _may_hold_run
from airflow_hoop.gateway.masking.methods import Hasher, _partial_column, partial
from airflow_hoop.gateway.masking.rules import MaskingPolicy

KEY = bytes(range(7, 39))
FUZZ = settings(max_examples=400, derandomize=True, deadline=None)

_ALNUM = st.text(alphabet=string.ascii_letters + string.digits, max_size=24)
_ANY_TEXT = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + " -.*\x00éü€"), max_size=24
)


# -- oracles: the implementations before the fast paths -----------------------------------------
def _luhn_oracle(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card_oracle(buf: bytes, start: int, end: int) -> list[tuple[int, int]]:
    from airflow_hoop.gateway.masking.detectors import card_brand_ok

    if start > 0 and (buf[start - 1 : start].isdigit() or buf[start - 1 : start] == b"."):
        return []
    groups: list[tuple[int, int]] = []
    i = start
    while i < end:
        j = i
        while j < end and 48 <= buf[j] <= 57:
            j += 1
        groups.append((i, j))
        i = j + 1
    for first in range(len(groups)):
        for last in range(len(groups) - 1, first - 1, -1):
            s, e = groups[first][0], groups[last][1]
            if e < len(buf) and buf[e : e + 1].isdigit():
                continue
            digits = "".join(buf[a:b].decode() for a, b in groups[first : last + 1])
            if 12 <= len(digits) <= 19 and card_brand_ok(digits) and _luhn_oracle(digits):
                return [(s, e)]
    return []


def _iban_oracle(buf: bytes, start: int, end: int) -> list[tuple[int, int]]:
    want = IBAN_LENGTHS.get(buf[start : start + 2].decode())
    if want is None:
        return []
    candidate = buf[start:end]
    if b" " not in candidate:
        i = start + want
        compact = candidate[:want]
    else:
        seen, i = 0, start
        while i < end and seen < want:
            seen += buf[i] != 0x20
            i += 1
        compact = buf[start:i].replace(b" ", b"")
    if len(compact) < want or (i < len(buf) and buf[i : i + 1].isalnum()):
        return []
    return [(start, i)] if iban_ok(compact.decode()) else []


# -- methods ------------------------------------------------------------------------------------
@FUZZ
@given(st.lists(_ALNUM, min_size=1, max_size=30), st.integers(1, 16))
def test_partial_of_a_column_of_letters_and_digits(values: list[str], keep: int) -> None:
    """The lengths-only path (every value ASCII letters and digits) equals ``partial``."""
    assert _partial_column(values, keep) == [partial(v, keep) for v in values]


@FUZZ
@given(st.integers(0, 40), st.integers(1, 400), st.integers(1, 16))
def test_partial_of_a_column_of_one_length(length: int, rows: int, keep: int) -> None:
    """The one-length path (cards of one scheme) equals ``partial`` at every length."""
    alphabet = string.digits + string.ascii_letters
    values = [
        "".join(alphabet[(r * 7 + i * 3) % len(alphabet)] for i in range(length))
        for r in range(rows)
    ]
    assert _partial_column(values, keep) == [partial(v, keep) for v in values]


@FUZZ
@given(st.lists(_ANY_TEXT, min_size=1, max_size=30), st.integers(1, 8))
def test_partial_of_any_column(values: list[str], keep: int) -> None:
    """Separators, stars, NUL and non-ASCII take the general path, with the same result."""
    assert _partial_column(values, keep) == [partial(v, keep) for v in values]


@FUZZ
@given(st.lists(st.text(max_size=40), min_size=1, max_size=20))
def test_hash_of_a_column_is_hmac_sha256(values: list[str]) -> None:
    """Tokens stay what reviewers joined on before: RFC 2104 HMAC-SHA256, 32 hex digits."""
    hasher = Hasher(KEY, "k v1")
    expected = [
        "hmac:" + hmac.new(KEY, v.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]
        for v in values
    ]
    assert hasher.texts(values) == expected
    assert [hasher(v.encode("utf-8", "surrogatepass")) for v in values] == expected


# -- detectors ----------------------------------------------------------------------------------
@FUZZ
@given(st.text(alphabet=string.digits, min_size=1, max_size=25))
def test_luhn_equals_the_textbook_algorithm(digits: str) -> None:
    assert luhn_ok(digits) == _luhn_oracle(digits)


_CARDISH = st.lists(
    st.tuples(st.text(alphabet=string.digits, min_size=1, max_size=8), st.sampled_from(" -")),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(_CARDISH, st.sampled_from(["", "x", "7", ".", " ", "-"]), st.sampled_from(["", "9", " a"]))
def test_card_check_equals_the_previous_check(
    groups: list[tuple[str, str]], before: str, after: str
) -> None:
    """Grouped and ungrouped numbers, with digits or a dot next to them."""
    body = "".join(g + sep for g, sep in groups)[:-1]
    for text in (body, body.replace(" ", "").replace("-", "")):
        buf = f"{before}{text}{after}".encode()
        start, end = len(before), len(before) + len(text)
        assert _card(buf, start, end) == _card_oracle(buf, start, end), text


def test_card_check_on_real_numbers() -> None:
    """The fuzz above rarely hits a valid card: these are valid, grouped and not."""
    for text in (
        "4111111111111111",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
    ):
        for context in ("{}", "qty 3 {}", "{} 12", "1{}", "{}9", "0.{}"):
            buf = context.format(text).encode()
            start = buf.index(text[:4].encode())
            end = start + len(text)
            assert _card(buf, start, end) == _card_oracle(buf, start, end), buf


@FUZZ
@given(
    st.sampled_from(["DE", "GB", "NO", "FR", "XX", "LC"]),
    st.text(alphabet=string.digits + string.ascii_uppercase, min_size=13, max_size=34),
    st.lists(st.integers(1, 33), max_size=8),
    st.sampled_from(["", "A", " x", "0"]),
)
def test_iban_check_equals_the_previous_check(
    country: str, body: str, spaces: list[int], after: str
) -> None:
    compact = country + body
    text = compact
    for at in sorted(set(spaces), reverse=True):
        if at < len(text) - 1 and text[at - 1] != " ":
            text = text[:at] + " " + text[at:]
    buf = (text + after).encode()
    assert _iban(buf, 0, len(text)) == _iban_oracle(buf, 0, len(text))


def test_iban_check_on_real_ibans() -> None:
    for text in (
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
    ):
        for after in ("", " 12", "9", " more"):
            buf = (text + after).encode()
            assert _iban(buf, 0, len(buf)) == _iban_oracle(buf, 0, len(buf))
            expected = [] if after[:1].isalnum() else [(0, len(text))]  # "...00 9" is fine
            assert _iban(buf, 0, len(text)) == expected


# -- the engine ---------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.integers(1, 60))
def test_the_long_cell_test_never_misses_one(lengths: list[int], chars: int) -> None:
    """``_may_hold_run`` may say yes wrongly, never no wrongly: a too big cell is found."""
    cells = ["y" * n for n in lengths]
    if any(n > chars for n in lengths):
        assert _may_hold_run("\x00".join(cells), len(cells), chars)


def test_a_too_big_cell_among_a_million_characters_is_an_error() -> None:
    """The window test finds one long cell in a large column (not only in a small one)."""
    policy = MaskingPolicy.model_validate(
        {"name": "p", "detectors": ["email"], "max_cell_bytes": 4000}
    )
    rows = [(f"row {i} a{i}@x.io",) for i in range(100_000)]
    # 1,008 characters: more than 4,000 / 4, so the cells are measured; 1,008 bytes is fine.
    rows[77_777] = ("z" * 1001 + " b@x.io",)
    masker = MaskingEngine(policy).start()
    out = masker.mask_rows([ColumnInfo("note")], rows)
    assert masker.err_count == 0  # 1,008 bytes: within the limit
    assert out[77_777][0].endswith("<EMAIL_ADDRESS>")
    rows[77_777] = ("é" * 2001,)  # 4,002 bytes in 2,001 characters
    masker = MaskingEngine(policy).start()
    out = masker.mask_rows([ColumnInfo("note")], rows)
    assert masker.err_count == 1 and out[77_777][0] == "***"
    assert out[5][0] == "row 5 <EMAIL_ADDRESS>"
