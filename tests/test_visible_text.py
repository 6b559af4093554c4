"""Text from a sender's files reaches the log book on one visible line (issue 11, item 11)."""

from bridge.logbook import RECEIVE, WARNING, LogBook, LogEntry
from bridge.visible_text import is_visible, visible


def test_controls_become_spaces_and_format_characters_go():
    assert visible("a\tb\nc\u2028d") == "a b c d"
    assert visible("\u202eevil\u2066x\u2069\u200b\ufeff") == "evilx"
    assert visible("山田 太郎 Müller") == "山田 太郎 Müller"
    assert visible("a\x01b", "-") == "a-b"
    assert not is_visible("a\u202eb") and is_visible("山田, 太郎")


def test_the_log_book_stores_one_visible_line(tmp_path):
    book = LogBook(tmp_path / "log.sqlite")
    try:
        book.add(LogEntry(action=RECEIVE, status=WARNING, patient_name="EVIL\u202e^x\tY", study_description="a\nb",
                          detail="cannot read x\r\ny\u2067", target="/s/a\x1bb"))
        (row,) = book.newest()
    finally:
        book.close()
    assert (row.patient_name, row.study_description, row.detail, row.target) == (
        "EVIL^x Y", "a b", "cannot read x  y", "/s/a b")
