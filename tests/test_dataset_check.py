"""The completeness walk (bridge.dataset_check) against every real file pydicom ships.

Whole files pass; a file cut anywhere except between two top-level elements (where the rest is
simply a shorter dataset, which no walk can tell apart) fails; feeding in random chunks gives the
same verdict, word for word, as feeding at once. Cut points are chosen independently of the walk:
top-level element boundaries come from pydicom's own element generator.
"""

from __future__ import annotations

import io
import random
import subprocess
import zlib
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from bridge.dataset_check import DatasetWalker, IncompleteDataset, check_file

from .peers import PEER_ENV, dcmtk

TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"}
BROKEN_ON_PURPOSE = {
    "DICOMDIR-nooffset",         # an item longer than its sequence (pydicom's test of a bad DICOMDIR)
    "meta_missing_tsyntax.dcm",  # no transfer syntax: nothing to walk the dataset with
}


@cache
def _part10_files() -> tuple[Path, ...]:
    files = []
    for name in get_testdata_files():
        path = Path(name)
        if path.is_file() and path.stat().st_size >= 132:
            with open(path, "rb") as handle:
                if handle.read(132)[128:] == b"DICM":
                    files.append(path)
    return tuple(sorted(files))


def _whole_files() -> list[Path]:
    return [p for p in _part10_files() if p.name not in TRUNCATED | BROKEN_ON_PURPOSE]


@cache
def _dataset(path: Path) -> tuple[str, bytes, frozenset[int]]:
    """(transfer syntax, dataset bytes, top-level element boundaries) of a Part-10 file, by pydicom."""
    with open(path, "rb") as handle:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        data = handle.read()
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if syntax == DeflatedExplicitVRLittleEndian:  # any cut breaks the deflate stream (not a pad byte after it)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflater.decompress(data)
        stream_end = len(data) - len(inflater.unused_data)  # image_dfl.dcm has 8 bytes after it
        return syntax, data, frozenset({0, *range(stream_end, len(data) + 1)})
    implicit, little = dcmread(path, force=True).original_encoding
    stream = io.BytesIO(data)
    generator = data_element_generator(stream, bool(implicit), bool(little), defer_size=256)
    boundaries = {0}
    for _ in generator:
        boundaries.add(stream.tell())
    return syntax, data, frozenset(boundaries)


def _verdict(syntax: str, data: bytes, chunks: list[int] | None = None) -> str:
    """'' when the walk accepts ``data``, else its message; ``chunks`` are the piece sizes to feed."""
    walker = DatasetWalker(syntax)
    try:
        if chunks is None:
            walker.feed(data)
        else:
            view, position = memoryview(data), 0
            for size in chunks:
                walker.feed(view[position : position + size])
                position += size
            walker.feed(view[position:])
        walker.finish()
    except IncompleteDataset as err:
        return str(err) or "?"
    return ""


def test_pydicom_ships_many_files_in_every_transfer_syntax():
    syntaxes = {_dataset(path)[0] for path in _whole_files()}
    assert len(_whole_files()) > 150
    assert {ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian} <= syntaxes
    assert len(syntaxes) >= 12, syntaxes  # JPEG, JPEG-LS, JPEG 2000, RLE, …


@pytest.mark.parametrize("path", _whole_files(), ids=lambda p: p.name)
def test_every_whole_file_passes(path):
    check_file(path)
    syntax, data, _ = _dataset(path)
    assert _verdict(syntax, data) == ""


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_the_truncated_files_pydicom_ships_fail_and_say_where(name):
    with pytest.raises(IncompleteDataset) as caught:
        check_file(Path(get_testdata_file(name)))
    expected = {
        "MR_truncated.dcm": "element (7FE0,0010) declares 8192 bytes, 8130 left",
        "rtplan_truncated.dcm": "element (300A,012C) declares 50 bytes, 29 left",
        "emri_small_jpeg_2k_lossless_too_short.dcm": "pixel data (7FE0,0010) fragments not closed",
    }[name]
    assert expected in str(caught.value)


def _cut_examples(seed: int, per_file: int = 6) -> list[tuple[Path, int]]:
    """Cut points in every whole file: random ones, and ones in and around element headers."""
    rng = random.Random(seed)
    examples = []
    for path in _whole_files():
        _, data, boundaries = _dataset(path)
        candidates = {len(data) - 1, 1, 7, 11, len(data) // 2}
        candidates.update(rng.randrange(1, len(data)) for _ in range(per_file))
        for boundary in rng.sample(sorted(boundaries), min(3, len(boundaries))):
            candidates.update({boundary + 3, boundary + 9, boundary - 1})
        examples += [(path, cut) for cut in sorted(candidates) if 0 < cut < len(data) and cut not in boundaries]
    return examples


def test_every_file_cut_anywhere_but_between_top_level_elements_fails():
    missed = []
    for path, cut in _cut_examples(seed=11):
        syntax, data, _ = _dataset(path)
        if _verdict(syntax, data[:cut]) == "":
            missed.append((path.name, cut, len(data)))
    assert not missed, missed[:20]


SMALL_FILES_OF_EVERY_KIND = [
    "rtplan.dcm",                     # implicit VR, nested sequences
    "test-SR.dcm",                    # explicit VR, deeply nested undefined-length sequences
    "MR_small_RLE.dcm",               # encapsulated pixel data: fragments
    "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",         # explicit VR big endian
    "image_dfl.dcm",                  # deflated
    "nested_priv_SQ.dcm", "priv_SQ.dcm", "UN_sequence.dcm",  # private and UN sequences
]


@pytest.mark.parametrize("name", SMALL_FILES_OF_EVERY_KIND)
def test_small_files_cut_at_every_single_byte(name):
    syntax, data, boundaries = _dataset(Path(get_testdata_file(name)))
    missed = [cut for cut in range(1, len(data)) if cut not in boundaries and _verdict(syntax, data[:cut]) == ""]
    assert not missed, missed[:20]


def test_check_file_seeking_over_values_agrees_with_the_walk_fed_every_byte(tmp_path):
    """check_file seeks over values instead of reading them: same verdict on files cut on disk."""
    cut_file = tmp_path / "cut.dcm"
    for path, cut in _cut_examples(seed=5, per_file=1)[::7]:
        syntax, data, _ = _dataset(path)
        whole = path.read_bytes()
        cut_file.write_bytes(whole[: len(whole) - len(data) + cut])
        try:
            check_file(cut_file)
            verdict = ""
        except IncompleteDataset as err:
            verdict = str(err)
        assert bool(verdict) == bool(_verdict(syntax, data[:cut])), (path.name, cut)


def test_a_cut_between_top_level_elements_is_a_shorter_whole_dataset():
    syntax, data, boundaries = _dataset(Path(get_testdata_file("CT_small.dcm")))
    inner = sorted(b for b in boundaries if 0 < b < len(data))
    assert all(_verdict(syntax, data[:b]) == "" for b in inner)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_chunked_walk_gives_the_same_verdict_as_whole(data):
    files = _part10_files()
    path = data.draw(st.sampled_from(files), label="file")
    try:
        syntax, dataset, _ = _dataset(path)
    except Exception:  # noqa: BLE001 - a file pydicom itself cannot open has no dataset to compare
        return
    cut = data.draw(st.one_of(st.just(len(dataset)), st.integers(0, len(dataset))), label="cut")
    piece = dataset[:cut]
    sizes = data.draw(st.lists(st.integers(0, 40) | st.integers(0, 70_000), max_size=12), label="chunks")
    assert _verdict(syntax, piece, sizes) == _verdict(syntax, piece)


def test_cut_inside_pixel_data_fragment_and_header_say_so():
    syntax, data, _ = _dataset(Path(get_testdata_file("MR_small_RLE.dcm")))
    pixel_header = data.rindex(b"\xe0\x7f\x10\x00")
    first_item = data.index(b"\xfe\xff\x00\xe0", pixel_header)
    assert "cut inside the header of an element" in _verdict(syntax, data[: pixel_header + 5])
    offset_table_length = int.from_bytes(data[first_item + 4 : first_item + 8], "little")
    assert "fragments not closed" in _verdict(syntax, data[: first_item + 8 + offset_table_length])
    sequence_end = data.rindex(b"\xfe\xff\xdd\xe0")
    assert "fragment of pixel data (7FE0,0010) declares" in _verdict(syntax, data[: sequence_end - 20])


def test_sequences_of_undefined_length_cut_at_element_boundaries_are_named():
    """Sequences and items of undefined length, cut right after an inner element or delimiter."""
    dataset = Dataset()
    dataset.SOPInstanceUID = "1.2.3"
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    reference.is_undefined_length_sequence_item = True
    dataset.ReferencedImageSequence = Sequence([reference])
    dataset["ReferencedImageSequence"].is_undefined_length = True
    dataset.PatientName = "A^B"
    for implicit in (True, False):
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = implicit, True
        write_dataset(buffer, dataset)
        data = buffer.getvalue()
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        item_end = data.index(b"\xfe\xff\x0d\xe0")
        sequence_end = data.index(b"\xfe\xff\xdd\xe0")
        assert _verdict(syntax, data) == ""
        assert _verdict(syntax, data[:item_end]) == "sequence (0008,1140) item not closed"
        assert _verdict(syntax, data[:sequence_end]) == "sequence (0008,1140) not closed"
        assert _verdict(syntax, data[: sequence_end + 8]) == ""  # a shorter, whole dataset


def test_check_file_cut_on_disk_fails_also_inside_the_meta(tmp_path):
    source = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    for cut in (100, 131, 140, 200, len(source) - 1000, len(source) - 1):
        broken = tmp_path / f"cut{cut}.dcm"
        broken.write_bytes(source[:cut])
        with pytest.raises(IncompleteDataset):
            check_file(broken)


def test_a_deflate_bomb_is_walked_in_bounded_pieces():
    """A deflated dataset of 200 MB of zeros inside one element never sits in memory at once."""
    element = b"\x09\x00\x10\x10OB\x00\x00" + (200 * 1024 * 1024).to_bytes(4, "little")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = compressor.compress(element)
    zeros = bytes(1024 * 1024)
    stream += b"".join(compressor.compress(zeros) for _ in range(200)) + compressor.flush()
    assert _verdict(DeflatedExplicitVRLittleEndian, stream) == ""
    assert "deflate stream" in _verdict(DeflatedExplicitVRLittleEndian, stream[:-50])


def _dcmtk_reads_whole(path: Path) -> bool:
    """DCMTK's verdict: dcmdump (the parser storescp uses) reads the file to its end without an error."""
    result = subprocess.run([dcmtk("dcmdump"), "-q", str(path)], check=False, capture_output=True, text=True,
                            timeout=60, env=PEER_ENV)
    return result.returncode == 0 and "error" not in (result.stdout + result.stderr).lower()


@pytest.mark.peers
def test_dcmtk_agrees_on_pydicoms_broken_and_whole_files():
    for name in sorted(TRUNCATED) + ["CT_small.dcm", "rtplan.dcm", "MR_small_RLE.dcm", "image_dfl.dcm"]:
        path = Path(get_testdata_file(name))
        try:
            check_file(path)
            ours = True
        except IncompleteDataset:
            ours = False
        assert ours == _dcmtk_reads_whole(path), name




@pytest.mark.peers
@pytest.mark.parametrize("zeros", [1, 7, 8, 16, 1000])
def test_trailing_zero_bytes_get_the_same_verdict_as_dcmtk(tmp_path, zeros):
    """Eight or more zero bytes after the dataset: DCMTK reads them as its end; fewer: a cut header."""
    padded = tmp_path / "padded.dcm"
    padded.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes() + bytes(zeros))
    try:
        check_file(padded)
        ours = True
    except IncompleteDataset:
        ours = False
    assert ours == _dcmtk_reads_whole(padded) == (zeros >= 8)
    syntax, data, _ = _dataset(Path(get_testdata_file("CT_small.dcm")))
    assert _verdict(syntax, data + bytes(zeros), [len(data) + 3, 2]) == _verdict(syntax, data + bytes(zeros))
    assert "after the trailing zero padding" in _verdict(syntax, data + bytes(max(zeros, 8)) + b"\x08\x00")


def test_an_undefined_length_un_sequence_in_big_endian_holds_implicit_little_endian_items():
    """CP-246: the content of an undefined-length UN is implicit VR little endian, whatever the syntax."""
    inner = b"\x08\x00\x50\x11" + (4).to_bytes(4, "little") + b"1.2\x00"  # (0008,1150) implicit LE
    item = b"\xfe\xff\x00\xe0" + (len(inner)).to_bytes(4, "little") + inner
    un = (b"\x00\x09\x10\x00UN\x00\x00" + b"\xff\xff\xff\xff" + item + b"\xfe\xff\xdd\xe0" + bytes(4))
    modality = b"\x00\x08\x00\x60CS\x00\x02MR"
    data = modality + un
    assert _verdict(ExplicitVRBigEndian, data) == ""
    assert _verdict(ExplicitVRBigEndian, data[:-8]) == "sequence (0009,1000) not closed"


def test_a_nesting_bomb_is_refused_without_growing_memory():
    """Millions of nested undefined-length sequences and items would each cost a frame: bounded."""
    level = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    message = _verdict(ExplicitVRLittleEndian, level * 100_000)
    assert message.startswith("sequences nested deeper than 32 levels"), message
