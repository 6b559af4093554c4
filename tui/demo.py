"""A fixed, realistic session for screenshots and snapshot tests (no network, no clock).

It implements the same Session interface as the real ones, so the screens cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.events import BridgeStatus, PendingInfo, Subscriber
from bridge.session import FAILED, INFO, RECEIVE, SEND, SERVICE, SUCCESS, WARNING, LogEntry, Outcome
from bridge.settings import Settings, load_settings

if TYPE_CHECKING:
    from textual.pilot import Pilot

UID = "1.3.46.670589.16.2.2.192.30.0.171.20040722.72143.104226"

DEMO_ENTRIES = [
    LogEntry(SEND, FAILED, "no connection to the PACS at 10.0.0.20:104 (Connection refused); gave up after 4 tries",
             patient_name="MEIER, Anna", birth_date="1961-03-14", study_date="2026-11-20", modality="MR",
             image_count=212, study_description="MRT Knie rechts",
             target="/srv/CrypeDcm/Outbox_Failed/MEIER, Anna_1961-03-14_F_2026-11-20_MR.zip",
             timestamp="2026-11-23T09:41:07+01:00"),
    LogEntry(RECEIVE, WARNING, "3 images zipped into Inbox_Manual (no recipient IDs: forward manually); "
             "malformed recipient IDs removed, study needs manual forwarding: not 16 digits: '12345'",
             patient_name="SCHMIDT, Peter", birth_date="1948-11-02", study_date="2026-11-23", modality="DX",
             image_count=3, study_description="Thorax pa + seitlich",
             target="/srv/CrypeDcm/Inbox_Manual/SCHMIDT, Peter_1948-11-02_M_2026-11-23_DX_1.2.3.4.zip",
             timestamp="2026-11-23T09:38:52+01:00"),
    LogEntry(RECEIVE, SUCCESS, "412 images zipped into Inbox_Auto", patient_name="HOLTZMANN, Carsten",
             birth_date="1929-05-05", study_date="2004-07-22", modality="CT-SR", image_count=412,
             study_description="CT Abdomen mit KM", crid="CRID#1234567890123456",
             target=f"/srv/CrypeDcm/Inbox_Auto/HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT-SR_{UID}"
                    "_CRID#1234567890123456.zip",
             timestamp="2026-11-23T09:35:10+01:00"),
    LogEntry(SEND, SUCCESS, "24 images stored in the PACS", patient_name="NGUYEN, Thi Lan", birth_date="1990-08-30",
             study_date="2026-11-22", modality="US", image_count=24, study_description="Sonographie Abdomen",
             target="Befund_Nguyen.zip", timestamp="2026-11-23T09:12:44+01:00"),
    LogEntry(RECEIVE, SUCCESS, "2 images zipped into Inbox_Auto", patient_name="OZTURK, Emre",
             birth_date="1975-01-19", study_date="2026-11-23", modality="MG", image_count=2,
             study_description="Mammographie beidseits", crid="CRID#9876543210987654CRID#1234567890123456",
             target="/srv/CrypeDcm/Inbox_Auto/…", timestamp="2026-11-23T08:57:31+01:00"),
    LogEntry(SERVICE, INFO, "bridge started; receiving on port 11112 as CRYPE_DCM; sending Outbox_Auto to "
             "PACS@10.0.0.20:104; storage /srv/CrypeDcm", timestamp="2026-11-23T07:00:02+01:00"),
]
for number, entry in enumerate(DEMO_ENTRIES):
    entry.entry_id = len(DEMO_ENTRIES) - number

DEMO_PENDING = (
    PendingInfo("1.2.840.1", 96, 18.0, "WAGNER, Eva", "2026-11-23", "CT", "CRID#1234567890123456",
                "CT_ROOM2@10.0.0.31"),
    PendingInfo("1.2.840.2", 4, 27.0, "KRAUSE, Jonas", "2026-11-23", "DX", "", "DX_ROOM1@10.0.0.32"),
)
DEMO_STATUS = BridgeStatus(listening=True, port=11112, receiver_error="", pending=DEMO_PENDING, outbox_waiting=1,
                           owner_pid=None, last_error="09:41:07 send: no connection to the PACS at 10.0.0.20:104 "
                                                      "(Connection refused); gave up after 4 tries")


class DemoSession:
    attached = False
    label = "/etc/dicombridge/config.toml"
    storage = Path("/srv/CrypeDcm")

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        load_settings(config_path)  # creates the file with defaults if it is not there

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return lambda: None

    def newest(self, limit: int = 500) -> list[LogEntry]:
        return DEMO_ENTRIES[:limit]

    def status(self) -> BridgeStatus:
        return DEMO_STATUS

    def apply(self, settings: Settings) -> str:
        return ""

    def echo(self, settings: Settings) -> Outcome:
        return Outcome(True, "C-ECHO succeeded in 3 ms")

    def test_mail(self, settings: Settings) -> Outcome:
        return Outcome(True, "test mail sent")

    def again(self, entry: LogEntry) -> Outcome:
        return Outcome(False, "not in the demo")

    def reason(self, entry: LogEntry) -> str:
        return ""

    def close(self) -> None:
        pass


# The README's pictures (scripts/screenshots.py) and the snapshot tests show the same views.
VIEWS = ("logbook", "pending", "help", "unsaved", "settings", "settings-notify")
SCREENSHOTS = {"logbook-120x40": ("logbook", (120, 40)), "logbook-80x24": ("logbook", (80, 24)),
               "pending-80x24": ("pending", (80, 24)), "help-80x24": ("help", (80, 24)),
               "settings-80x24": ("settings", (80, 24)), "settings-notify-120x40": ("settings-notify", (120, 40))}


async def show(pilot: Pilot, view: str) -> None:
    """Bring the demo app to ``view``, steady for a picture (no blinking cursor, no animation)."""
    from textual.widgets import DataTable, Input

    app = pilot.app
    app.animation_level = "none"
    if view == "pending":
        await pilot.press("f4")
    elif view == "help":
        await pilot.press("f1")
    elif view.startswith("settings") or view == "unsaved":
        await pilot.press("f3")
    await pilot.pause()
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make the picture random
    if view == "logbook":
        app.screen.query_one(DataTable).move_cursor(row=1)  # the failed first row shows its colour
    elif view == "settings-notify":
        app.screen.query(".section-title").last().scroll_visible(top=True, animate=False)
    elif view == "unsaved":
        app.screen.query_one("#receive-ae-title", Input).value = "CT_ROOM_2"
        await pilot.pause()
        await pilot.press("ctrl+q")
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
