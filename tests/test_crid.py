"""Recipient-ID parsing (README "What happens to a study"): prefix text survives, no recipient-ID text is kept."""

import io
import itertools

from hypothesis import given
from hypothesis import strategies as st

from bridge.crid import PrefixWatch, format_ids, merge_ids, split_crids

ID_A, ID_B = "1234567890123456", "9876543210987654"


def test_ids_after_real_content():
    result = split_crids(f"Main Street 5 CRID#{ID_A}".encode())
    assert result.kept == b"Main Street 5" and result.ids == (ID_A,) and not result.malformed


def test_several_ids_and_nothing_else():
    result = split_crids(f"CRID#{ID_A}CRID#{ID_B} ".encode())
    assert result.kept == b"" and result.ids == (ID_A, ID_B)


def test_no_ids_leaves_value_untouched():
    assert split_crids(b"Labrador ").kept == b"Labrador "
    assert not split_crids(b"Labrador ").found_suffix


def test_ids_separated_by_whitespace_all_route():
    result = split_crids(f"x CRID#{ID_A} CRID#{ID_B}".encode())
    assert result.kept == b"x" and result.ids == (ID_A, ID_B) and not result.malformed
    assert split_crids(f"CRID#{ID_A}\t CRID#{ID_B}  ".encode()).ids == (ID_A, ID_B)


def test_ids_not_at_the_end_are_removed_and_refused():
    result = split_crids(f"CRID#{ID_A} hello".encode())
    assert result.kept == b"hello" and result.ids == () and "not at the end" in result.malformed
    result = split_crids(f"a CRID#{ID_A} b CRID#{ID_B}".encode())
    assert result.kept == b"a b" and result.ids == () and ID_A in result.malformed


def test_malformed_suffixes_are_cut_and_refused():
    six = "".join(f"CRID#{n:016d}" for n in range(6))
    for value, reason in [(f"x CRID#{ID_A[:-1]}", "16 digits"), (six, "6 recipient IDs, at most 5"),
                          (f"crid#{ID_A}", "upper-case"), (f"a CRID#{ID_A}x", "16 digits"),
                          (f"a CRID#{ID_A}7", "16 digits"), (f"CRID# {ID_A}", "16 digits"),
                          (f"CRID#{ID_A}\\Dog", "not at the end"), (f"x CRID#{ID_A}-{ID_B}", "16 digits")]:
        result = split_crids(value.encode())
        assert result.ids == () and reason in result.malformed and result.found_suffix, value
        assert b"CRID" not in result.kept.upper() and ID_A[:8].encode() not in result.kept, value


def test_the_same_id_twice_counts_once():
    assert split_crids(f"CRID#{ID_A} CRID#{ID_A}".encode()).ids == (ID_A,)


def test_a_backslash_separated_last_value_keeps_its_separator():
    assert split_crids(f"Dog\\CRID#{ID_A}".encode()) == split_crids(f"Dog\\CRID#{ID_A}".encode())
    result = split_crids(f"Dog\\CRID#{ID_A}".encode())
    assert result.kept == b"Dog\\" and result.ids == (ID_A,)


def test_warnings_quote_fragments_safely():
    result = split_crids(b"CRID#\xe9\x1b\xff" + b"9" * 100)
    assert result.malformed.isascii() and len(result.malformed) < 120


def test_five_ids_are_fine():
    assert len(split_crids("".join(f"CRID#{n:016d}" for n in range(5)).encode()).ids) == 5


def test_merge_keeps_first_appearance_order():
    assert merge_ids([(ID_B,), (ID_A, ID_B), ()]) == (ID_B, ID_A)
    assert format_ids((ID_A, ID_B)) == f"CRID#{ID_A}CRID#{ID_B}"


_ids = st.lists(st.text(alphabet="0123456789", min_size=16, max_size=16), min_size=1, max_size=5, unique=True)
# Prefix text: any bytes that do not themselves end in an ID-like run.
_prefix = st.binary(max_size=60).filter(lambda b: b"CRID#" not in b.upper())


@given(prefix=_prefix, ids=_ids, gap=st.sampled_from([b"", b" ", b"   "]),
       between=st.sampled_from([b"", b" ", b"\t", b" \r\n "]))
def test_any_prefix_survives_byte_for_byte(prefix, ids, gap, between):
    value = prefix + gap + between.join(f"CRID#{i}".encode() for i in ids)
    result = split_crids(value)
    assert result.ids == tuple(ids)
    assert result.kept == (prefix + gap).rstrip(b" \t\r\n\f\v")


_noise = st.lists(st.sampled_from([b"CRID#", b"crid#", b"1234567890123456", b"12345", b" ", b"\\", b"\x00", b"x",
                                   b"\xe9", b"\x1b$B", b"#", b"CRID", b"\t"]), max_size=12).map(b"".join)


@given(value=st.one_of(st.binary(max_size=80), _noise))
def test_no_crid_text_is_ever_kept(value):
    result = split_crids(value)
    assert b"CRID#" not in result.kept.upper()
    if not result.found_suffix:
        assert result.kept == value
    if result.ids:
        assert all(len(i) == 16 and i.isdigit() for i in result.ids) and len(result.ids) <= 5
        assert not result.malformed


@given(before=st.binary(max_size=300), after=st.binary(max_size=300), prefix=st.sampled_from([b"CRID#", b"crid#"]),
       cuts=st.lists(st.integers(min_value=0, max_value=610), max_size=6))
def test_the_prefix_watch_finds_text_split_over_any_chunks(before, after, prefix, cuts):
    data = before.replace(b"CRID#", b"").replace(b"crid#", b"") + prefix + after
    sink = io.BytesIO()
    watch = PrefixWatch(sink)
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(edges):
        watch.write(data[start:end])
    assert sink.getvalue() == data
    assert watch.found_at == min(at for at in (data.find(b"CRID#"), data.find(b"crid#")) if at >= 0)


def test_the_prefix_watch_stays_quiet_without_the_prefix():
    watch = PrefixWatch(io.BytesIO())
    for chunk in (b"CRI", b"D", b"-crid", b" #"):
        watch.write(chunk)
    assert watch.found_at is None


def test_the_prefix_watch_looks_at_the_first_bytes_only():
    for start, found in [(95, 95), (96, 96), (101, None)]:  # a prefix that starts in the window is found
        watch = PrefixWatch(io.BytesIO(), watched_bytes=100)
        data = b"x" * start + b"CRID#" + b"y" * 50
        for at in range(0, len(data), 7):
            watch.write(data[at : at + 7])
        assert watch.found_at == found, start
