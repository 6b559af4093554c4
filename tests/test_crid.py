"""Recipient-ID parsing (manual §3), with property-based checks that prefix text survives."""

from hypothesis import given
from hypothesis import strategies as st

from bridge.crid import format_ids, merge_ids, split_crids

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


def test_ids_not_at_the_end_are_not_ids():
    assert split_crids(f"CRID#{ID_A} and more".encode()).ids == ()


def test_malformed_suffixes_are_cut_and_refused():
    for value, reason in [(f"x CRID#{ID_A[:-1]}", "16 digits"), (f"CRID#{ID_A}" * 6, "at most 5"),
                          (f"crid#{ID_A}", "upper-case"), (f"a CRID#{ID_A}x", "16 digits")]:
        result = split_crids(value.encode())
        assert result.ids == () and reason in result.malformed and result.found_suffix
        assert b"CRID" not in result.kept.upper()


def test_five_ids_are_fine():
    assert len(split_crids((f"CRID#{ID_A}" * 5).encode()).ids) == 5


def test_merge_keeps_first_appearance_order():
    assert merge_ids([(ID_B,), (ID_A, ID_B), ()]) == (ID_B, ID_A)
    assert format_ids((ID_A, ID_B)) == f"CRID#{ID_A}CRID#{ID_B}"


_ids = st.lists(st.text(alphabet="0123456789", min_size=16, max_size=16), min_size=1, max_size=5)
# Prefix text: any bytes that do not themselves end in an ID-like run.
_prefix = st.binary(max_size=60).filter(lambda b: b"CRID#" not in b.upper())


@given(prefix=_prefix, ids=_ids, gap=st.sampled_from([b"", b" ", b"   "]))
def test_any_prefix_survives_byte_for_byte(prefix, ids, gap):
    value = prefix + gap + "".join(f"CRID#{i}" for i in ids).encode()
    result = split_crids(value)
    assert result.ids == tuple(ids)
    assert result.kept == (prefix + gap).rstrip(b" ")


@given(value=st.binary(max_size=80))
def test_kept_text_is_always_a_prefix_of_the_value(value):
    result = split_crids(value)
    assert value.startswith(result.kept)
    if result.ids:
        assert all(len(i) == 16 and i.isdigit() for i in result.ids) and len(result.ids) <= 5
