"""The JSON number kernels against Python: every number equals ``float(text)`` bit for bit, the
arrays and documents equal their plain-Python twins, and the kernels accept exactly what
``json.loads`` accepts (reporting where they stop)."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ccarchive.kernels import jsonnum
from ccarchive.kernels.jsonnum import (
    JsonSyntaxError,
    document_reference,
    gather_rows,
    parse_array,
    parse_array_into,
    parse_array_reference,
    parse_document,
)


def bits(x: float) -> int:
    """The float64's bit pattern: tells -0.0 from 0.0 and compares NaN."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


def same_floats(got: np.ndarray, want: list[float]) -> bool:
    return [bits(x) for x in np.asarray(got, dtype=np.float64).tolist()] == [bits(x) for x in want]


def assert_same_tree(got: Any, want: Any, where: str = "$") -> None:
    """Equal documents, number arrays compared bit for bit (dtype float64)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == np.float64, where
        assert same_floats(got, want.tolist()), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for k in want:
            assert_same_tree(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_tree(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert type(got) is type(want) and got == want, where


# ----------------------------------------------------------------------------------------------
# One number: exactly float(text)

ADVERSARIAL = [
    "0", "-0", "0.0", "-0.0", "0e5", "-0e-5", "0.000", "1", "-1", "7.90", "0.1", "0.2", "0.3",
    "1e308", "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1e309",
    "2e308", "1e400", "1e-400", "-1e400",
    "2.2250738585072014e-308", "2.2250738585072011e-308", "2.2250738585072012e-308",
    "4.9406564584124654e-324", "5e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-320",
    "3.4028235e38", "-3.4028235e38", "3.4028234663852886e38", "3.4028236e38",
    "340282346638528859811704183484516925440.00",
    "9007199254740992", "9007199254740993", "9007199254740994", "9007199254740995", "9007199254740993.0000000001",
    "18446744073709551615", "18446744073709551616", "12345678901234567890", "99999999999999999999",
    "-18446744073709551617", "123456789012345678901234567890",
    "1e23", "8.98846567431158e307", "0.1000000000000000055511151231257827021181583404541015625",
    "0.1000000000000000055511151231257827021181583404541015626", "7.2057594037927933e16",
    "9.5e-5", "1.00000000000000011102230246251565404236316680908203125",
    "1.00000000000000011102230246251565404236316680908203124",
    "1.00000000000000011102230246251565404236316680908203126",
    "4503599627370496.5", "4503599627370497.5", "1e22", "1e-22", "1e23", "1e-23", "123456789e-30",
    "0.00000000000000000000000000000000000000000000001", "100000000000000000000000000000000000000e-38",
    "2.00000000000000000000000000000000000000000000000000000001", "1E5", "1e+5", "1E-5", "-12.345e+2",
    "2608.85", "-1234.56", "12345.67", "0.05", "1000000.00", "12345678", "-12345678",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_number_is_float_of_its_text(text: str) -> None:
    values, end = parse_array(f"[{text}]".encode())
    assert end == len(text) + 2
    assert same_floats(values, [float(text)]), (text, values[0], float(text))
    # the same inside the document kernel, after a comma and at the end of a compact array
    doc = parse_document(f'{{"a":[1,{text}],"b":[{text}, 2]}}')
    assert same_floats(doc.array(0), [1.0, float(text)]) and same_floats(doc.array(1), [float(text), 2.0])


def _decimal_text(digits: str, point: int, exponent: int | None, neg: bool) -> str:
    digits = digits.lstrip("0") or "0"
    point = min(point, len(digits))
    whole, frac = digits[: len(digits) - point] or "0", digits[len(digits) - point :]
    text = ("-" if neg else "") + whole + ("." + frac if frac else "")
    return text if exponent is None else f"{text}e{exponent}"


number_texts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),                       # shortest round trip
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17e}"),      # 17 digits
    st.integers(-10**7, 10**7).map(lambda k: f"{k / 100:.2f}"),                       # data.json samples
    st.integers(-10**9, 10**9).map(lambda k: f"{k / 1000:.3f}"),                      # metric store answers
    st.builds(_decimal_text, st.text("0123456789", min_size=1, max_size=40), st.integers(0, 40),
              st.one_of(st.none(), st.integers(-350, 350)), st.booleans()),             # long mantissas
    st.builds(lambda m, e: f"{m}e{e}", st.integers(1, 2**64), st.integers(-345, 310)),  # Eisel-Lemire range
    st.floats(min_value=0.0, max_value=1e-300).map(lambda x: repr(x)),               # subnormals and near
    st.integers(-(10**25), 10**25).map(str),                                         # long integers
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(number_texts, min_size=1, max_size=20))
def test_random_numbers_equal_float_of_text(texts: list[str]) -> None:
    values, _ = parse_array(("[" + ",".join(texts) + "]").encode())
    assert same_floats(values, [float(t) for t in texts]), texts


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**53), 2**53), st.integers(-30, 30))
def test_halfway_decimals_round_to_even(m: int, e: int) -> None:
    """Exact midpoints between neighbouring floats, written out in full: ties go to even."""
    x = float(m) * 2.0**e
    nxt = math.nextafter(x, math.inf)
    mid = (Decimal(x) + Decimal(nxt)) / 2
    text = format(mid, "f")
    values, _ = parse_array(f"[{text}]".encode())
    assert bits(float(values[0])) == bits(float(text))


def test_float32_output_is_the_float32_of_the_float64() -> None:
    texts = ["3.4028235e38", "3.4028236e38", "1e-46", "0.1", "16777217", "-0", "null", "1.00000005960464477539062"]
    values, _ = parse_array(("[" + ",".join(texts) + "]").encode(), dtype=np.float32)
    with np.errstate(over="ignore"):
        want = np.array([math.nan if t == "null" else float(t) for t in texts]).astype(np.float32)
    assert values.dtype == np.float32
    assert values.tobytes() == want.tobytes()


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["0", "1", "7", "9", ".", "-", "null", "nul", "e", ",", ",", ",", "]", " "]),
                max_size=24), st.integers(0, 12))
@example(tokens=["1", "2", "3", "4", "5", ".", "6", "7", ",", "-", "1", "2", "3", "4", ".", "5", "6"], pad=0)
def test_compact_samples_accepted_and_read_as_json_does(tokens: list[str], pad: int) -> None:
    """The word-at-a-time path (a sample and its separator read as 8 + 1 bytes) against json,
    also where the text ends right after the array (pad 0: the byte-wise path)."""
    body = "".join(tokens)
    text = ("[" + body + "]").encode()
    try:
        want = json.loads(text, parse_int=jsonnum._IntText)
        assert isinstance(want, list) and all(jsonnum._is_number(v) for v in want)
    except (ValueError, AssertionError):
        want = None
    padded = text + b" " * pad
    if want is None:
        with pytest.raises(JsonSyntaxError):
            parse_document(padded)
    else:
        assert same_floats(parse_document(padded).array(0), [jsonnum._as_float(v) for v in want]), body


# ----------------------------------------------------------------------------------------------
# Arrays and documents against their plain-Python twins

sample = st.one_of(st.none(), number_texts)
spaces = st.sampled_from(["", "", "", " ", "\n  ", "\t", "\r\n"])


@st.composite
def array_texts(draw: Any) -> bytes:
    items = draw(st.lists(sample, max_size=30))
    ws = draw(spaces)
    body = ("," + ws).join("null" if v is None else v for v in items)
    return f"{draw(spaces)}[{ws}{body}{draw(spaces)}]{draw(spaces)}".encode()


@settings(max_examples=1000, deadline=None)
@given(array_texts(), st.integers(0, 3))
def test_parse_array_equals_reference(text: bytes, prefix: int) -> None:
    text = b"x" * prefix + text + b",tail"
    values, end = parse_array(text, prefix)
    want, want_end = parse_array_reference(text, prefix)
    assert same_floats(values, want)
    assert end == want_end
    assert text[end - 1 : end] == b"]"


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(st.one_of(st.none(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)),
                 max_size=12),
        st.dictionaries(st.text(max_size=6), children, max_size=5),
    ),
    max_leaves=40,
)


@settings(max_examples=800, deadline=None)
@given(json_values, st.sampled_from([None, 0, 2]), st.booleans())
def test_parse_document_equals_reference(value: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    doc = parse_document(text)
    assert_same_tree(doc.tree(), document_reference(text))
    # the skeleton is the text with each number array replaced by its marker, in order
    assert doc.skeleton.count("[") <= text.count(b"[")


def test_markers_are_unambiguous_and_tree_puts_views_back() -> None:
    text = b'{"a": [[5], "x", [], [null]], "b": [1, true], "c": [[1.5, 2], {"d": [-0]}], "e": 3, "f": [[[]]]}'
    doc = parse_document(text)
    assert doc.skeleton == '{"a": [[0], "x", [1], [2]], "b": [1, true], "c": [[3], {"d": [4]}], "e": 3, "f": [[[5]]]}'
    tree = doc.tree()
    assert_same_tree(tree, document_reference(text))
    assert np.shares_memory(tree["c"][0], doc.values)
    assert doc.counts.tolist() == [1, 0, 1, 2, 1, 0]


def test_dense_text_grows_the_value_array() -> None:
    """The first guess (a value per 4 bytes) is exceeded by text like ``0,0,0``: the kernel grows."""
    n = 50_000
    text = b'{"x":[' + b",".join([b"1"] * n) + b'],"y":[' + b",".join([b"2", b"null"] * n) + b"]}"
    doc = parse_document(text)
    assert doc.counts.tolist() == [n, 2 * n]
    assert (doc.array(0) == 1).all() and (doc.array(1)[::2] == 2).all() and np.isnan(doc.array(1)[1::2]).all()


def test_many_slow_numbers_grow_the_slow_list() -> None:
    texts = [f"1.{i:020d}1e-310" for i in range(100)] + ["123456789012345678901234"] * 50
    text = ("[" + ",".join(texts) + "]").encode()
    assert same_floats(parse_array(text)[0], [float(t) for t in texts])
    assert same_floats(parse_document(text).array(0), [float(t) for t in texts])


def test_parse_array_into_reports_full_outputs() -> None:
    buf = jsonnum.as_buffer(b"  [1.5, 2, 1e-320, 3]")
    out, slow = np.empty(2), np.empty((4, 3), dtype=np.int64)
    status, _end, count, _ = parse_array_into(buf, 0, out, slow)
    assert status == jsonnum.OUT_FULL and count == 2
    out = np.empty(4)
    status, end, count, nslow = parse_array_into(buf, 0, out, np.empty((0, 3), dtype=np.int64))
    assert status == jsonnum.SLOW_FULL
    status, end, count, nslow = parse_array_into(buf, 0, out, slow)
    assert (status, end, count, nslow) == (jsonnum.OK, len(buf), 4, 1)
    assert slow[0].tolist() == [2, 11, 17] and bytes(buf[11:17]) == b"1e-320"


def test_gather_rows_pads_with_nan() -> None:
    values = np.arange(10.0)
    out = gather_rows(values, np.array([0, 5, 0]), np.array([3, 5, 0]), 5)
    assert out.shape == (3, 5)
    np.testing.assert_array_equal(out, [[0, 1, 2, np.nan, np.nan], [5, 6, 7, 8, 9], [np.nan] * 5])


# ----------------------------------------------------------------------------------------------
# Malformed input: refused exactly where json refuses, with the position


@pytest.mark.parametrize(("text", "reason", "position"), [
    (b"", "unexpected end of text", 0),
    (b"[1, 2", "unexpected end of text", 5),
    (b"[1,]", "expected a value", 3),
    (b"[1 2]", "expected ',' or ']'", 3),
    (b"[01]", "expected ',' or ']'", 2),
    (b"[1.]", "malformed number", 3),
    (b"[.5]", "expected a value", 1),
    (b"[-]", "malformed number", 2),
    (b"[+1]", "expected a value", 1),
    (b"[nul]", "unknown literal", 1),
    (b'{"a" 1}', "expected ':'", 5),
    (b'{"a": 1,}', "expected a string key", 8),
    (b"{1: 2}", "expected a string key", 1),
    (b'{"a": [1, "x"}', "expected ',' or ']'", 13),
    (b'["a\x01"]', "control character", 3),
    (b'["\\x"]', "invalid escape", 2),
    (b'["\\u12g4"]', "invalid escape", 2),
    (b'["abc', "unterminated string", 5),
    (b"[1] [2]", "extra text after the document", 4),
    (b'{"a": "\xff"}', "not UTF-8 text", 7),
    (b'{\n  "a": [1,\n        2 3]}', "expected ',' or ']'", 23),
])
def test_syntax_errors_name_reason_and_position(text: bytes, reason: str, position: int) -> None:
    with pytest.raises(JsonSyntaxError) as info:
        parse_document(text)
    assert reason in str(info.value)
    assert info.value.position == position
    with pytest.raises(ValueError):
        json.loads(text)


def test_error_line_and_column() -> None:
    text = b'{\n  "a": [1,\n        2 3]}'
    with pytest.raises(JsonSyntaxError, match=r"at line 3 column 11 \(byte 23\)") as info:
        parse_document(text)
    assert (info.value.line, info.value.column) == (3, 11)


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'[{"a":'])
def test_deep_nesting_is_an_error_not_a_recursion(opener: bytes) -> None:
    text = opener * 100_000
    with pytest.raises(JsonSyntaxError, match="nested deeper than 512 levels"):
        parse_document(text)
    ok = b"[" * 511 + b"1" + b"]" * 511
    assert parse_document(ok).num_arrays == 1


_MUTATION_BYTES = list(b'"\\[]{},:0123456789-+.eEnulltrufasNIyx \t\n\r\x01\xff')


@settings(max_examples=1500, deadline=None)
@given(json_values, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, len(_MUTATION_BYTES)),
                                       st.sampled_from(["insert", "replace", "delete"])), min_size=1, max_size=3))
@example(value=[1, 2], edits=[(3, 0, "delete")])
def test_accepts_exactly_what_json_accepts(value: Any, edits: list[tuple[int, int, str]]) -> None:
    text = bytearray(json.dumps(value).encode())
    for at, which, how in edits:
        at %= len(text) + 1
        byte = _MUTATION_BYTES[which % len(_MUTATION_BYTES)]
        if how == "insert":
            text[at:at] = bytes([byte])
        elif at < len(text):
            text[at : at + 1] = b"" if how == "delete" else bytes([byte])
    try:
        json.loads(bytes(text).decode("utf-8"))
        valid = True
    except ValueError:
        valid = False
    if not valid:
        with pytest.raises(JsonSyntaxError) as info:
            parse_document(bytes(text))
        assert 0 <= info.value.position <= len(text)
    else:
        assert_same_tree(parse_document(bytes(text)).tree(), document_reference(bytes(text)))


def test_query_answer_tables_grow_and_numbers_are_exact() -> None:
    """Many small queries and entries, dense numbers and many slow ones: every table of the answer
    kernel outgrows its first size and the values still equal ``float(text)``."""
    numbers = ["0", "1e400", "2.5", "12345678901234567890123", "null", "-0"] * 8
    entry = '{"data":[' + ",".join(numbers) + '],"from":1,"to":2,"resolution":60}'
    dense = '{"data":[' + ",".join(["0"] * 20000) + '],"from":1,"to":2,"resolution":60}'
    tiny = '{"data":[],"from":1,"to":2,"resolution":0}'
    raw = ('{"results":[' + ",".join(["[" + ",".join([tiny] * 3) + "]"] * 100 + [f"[{entry},{entry}]", f"[{dense}]"])
           + "]}").encode()
    answer = jsonnum.parse_query_answer(raw)
    assert answer is not None
    assert answer.queries.shape == (102, 3) and answer.entries.shape == (303, 7)
    assert answer.queries[:100, 1:].tolist() == [[3, 1]] * 100 and answer.queries[100, 1:].tolist() == [2, 1]
    want = [math.nan if t == "null" else float(t) for t in numbers] * 2 + [0.0] * 20000
    assert same_floats(answer.values, want)
    assert answer.entries[301, jsonnum.E_OFFSET] == len(numbers) and answer.entries[302, jsonnum.E_COUNT] == 20000
    assert jsonnum.parse_query_answer(raw[:-1]) is None  # broken text: the general parser names the error
