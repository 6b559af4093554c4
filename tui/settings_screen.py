"""Settings: every setting with inline validation, Save / Reset, Send DICOM Echo and Send test mail.

Help texts and rules come from ``bridge.settings.SETTINGS`` (written once, used for the config
file's comments too). Save writes with tomlkit (comments, order, unknown keys survive) and
hands the new settings to the session, which puts them in force without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Footer, Header, Input, Label, Static, Switch

from bridge.mail import MailError
from bridge.notifier import send_test_mail
from bridge.pacs import pacs_target
from bridge.sender import PacsTarget, echo
from bridge.settings import (
    SETTINGS,
    Settings,
    SettingsError,
    SettingSpec,
    file_values,
    load_settings,
    save_values,
    settings_from_values,
    validate_value,
)

from .folder_picker import FolderPicker
from .messages import EchoFinished, TestMailFinished
from .status_bar import StatusBar

ECHO_TIMEOUT_SECONDS = 10
SECTION_TITLES = {"general": "General — storage folder and files", "receive": "Receive — from the PACS (Storage SCP)",
                  "send": "Send — Outbox_Auto to the PACS (Storage SCU)", "notify": "Notify — e-mail to people"}


def widget_id(spec: SettingSpec) -> str:
    return f"{spec.section}-{spec.key}".replace("_", "-")


def is_secret(spec: SettingSpec) -> bool:
    """Passwords are typed blind and never shown (a file name is not a secret)."""
    return spec.key.endswith("password")


def parse(spec: SettingSpec, text: str) -> Any:
    """Screen text → the setting's type (the validator then checks the range)."""
    if isinstance(spec.default, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(spec.default, int) and not isinstance(spec.default, bool):
        try:
            return int(text.strip())
        except ValueError:
            raise SettingsError(f"setting {spec.name} = {text!r} is invalid: it must be a whole number") from None
    return text


class SettingValidator(Validator):
    """Inline check of one field with the same rule the config file uses."""

    def __init__(self, spec: SettingSpec) -> None:
        super().__init__()
        self.spec = spec

    def validate(self, value: str) -> ValidationResult:
        try:
            validate_value(self.spec.name, parse(self.spec, value))
        except SettingsError as err:
            return self.failure(str(err).split(" is invalid: it ", 1)[-1])
        return self.success()


class SettingsScreen(Screen):
    BINDINGS = [("ctrl+s", "save", "Save"), ("ctrl+r", "reset", "Reset"), ("ctrl+e", "echo", "Echo"),
                ("ctrl+t", "test_mail", "Test mail"), ("ctrl+o", "pick_folder", "Pick folder")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            section = ""
            for spec in SETTINGS:
                if spec.section != section:
                    section = spec.section
                    yield Static(SECTION_TITLES.get(section, section), classes="section-title")
                with Horizontal(classes="setting-row"):
                    yield Label(spec.name, classes="setting-name")
                    if isinstance(spec.default, bool):
                        yield Switch(id=widget_id(spec))
                    else:
                        yield Input(id=widget_id(spec), validators=[SettingValidator(spec)], compact=True,
                                    classes="setting-input", tooltip=spec.help, password=is_secret(spec))
                    if spec.name == "general.storage_folder":
                        yield Button("Pick…", id="pick-folder", compact=True)
                yield Static(f"[dim]{escape(spec.help)}[/]", id=f"{widget_id(spec)}-error", classes="setting-help")
        with Horizontal(id="buttons"):
            yield Button("Save", id="save", variant="primary", compact=True)
            yield Button("Reset", id="reset", compact=True)
            yield Button("Send DICOM Echo", id="echo", compact=True)
            yield Button("Send test mail", id="test-mail", compact=True)
        yield Static("", id="result")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reset()

    def on_screen_resume(self) -> None:
        self.app.refresh_status()  # type: ignore[attr-defined]

    # -- values on screen ---------------------------------------------------------------------
    def _show(self, values: dict[str, Any]) -> None:
        for spec in SETTINGS:
            widget = cast("Input | Switch", self.query_one(f"#{widget_id(spec)}"))
            value = values[spec.name]
            if isinstance(widget, Switch):
                widget.value = bool(value)
            else:
                widget.value = ", ".join(value) if isinstance(value, (list, tuple)) else str(value)

    def _on_screen(self) -> dict[str, Any]:
        """Values as typed; raises SettingsError naming the first bad one."""
        values = {}
        for spec in SETTINGS:
            widget = cast("Input | Switch", self.query_one(f"#{widget_id(spec)}"))
            if isinstance(widget, Switch):
                values[spec.name] = widget.value
            else:
                values[spec.name] = validate_value(spec.name, parse(spec, widget.value))
        return values

    @on(Input.Changed, ".setting-input")
    def _inline_check(self, event: Input.Changed) -> None:
        """The line under a field shows its help, or what is wrong with the value typed."""
        result = event.validation_result
        message = "" if result is None or result.is_valid else "; ".join(result.failure_descriptions)
        spec = next(s for s in SETTINGS if widget_id(s) == event.input.id)
        line = f"[b red]{escape(message)}[/]" if message else f"[dim]{escape(spec.help)}[/]"
        self.query_one(f"#{event.input.id}-error", Static).update(line)

    def _say(self, text: str, error: bool = False) -> None:
        self.query_one("#result", Static).update(f"[b red]{escape(text)}[/]" if error else escape(text))

    # -- actions ------------------------------------------------------------------------------
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            values = self._on_screen()
            settings = save_values(self.app.session.config_path, values)  # type: ignore[attr-defined]
        except SettingsError as err:
            self._say(f"Not saved: {err}", error=True)
            return
        note = self.app.session.apply(settings)  # type: ignore[attr-defined]
        self._say(f"Saved to {self.app.session.config_path}." + (f" {note}." if note else ""))  # type: ignore[attr-defined]

    @on(Button.Pressed, "#pick-folder")
    def action_pick_folder(self) -> None:
        field = self.query_one("#general-storage-folder", Input)

        def take(folder: Path | None) -> None:
            if folder is not None:
                field.value = str(folder)

        self.app.push_screen(FolderPicker(Path(field.value).expanduser()), take)

    @on(Button.Pressed, "#reset")
    def action_reset(self) -> None:
        path = self.app.session.config_path  # type: ignore[attr-defined]
        try:
            load_settings(path)
        except SettingsError as err:
            self._say(f"The saved file is invalid: {err}", error=True)
            return
        self._show(file_values(path))
        self._say("Showing the saved settings.")

    @on(Button.Pressed, "#echo")
    def action_echo(self) -> None:
        try:
            values = self._on_screen()
        except SettingsError as err:
            self._say(f"Cannot echo: {err}", error=True)
            return
        try:
            target = pacs_target(settings_from_values(values), timeout_seconds=ECHO_TIMEOUT_SECONDS)
        except SettingsError as err:
            self._say(f"Cannot echo: {err}", error=True)
            return
        if not target.host:
            self._say("Cannot echo: send.host is empty", error=True)
            return
        self._say(f"C-ECHO to {target.called_ae}@{target.host}:{target.port} …")
        self._echo(target)

    @work(thread=True, exclusive=True, group="echo", exit_on_error=False)
    def _echo(self, target: PacsTarget) -> None:
        self.post_message(EchoFinished(echo(target)))

    @on(Button.Pressed, "#test-mail")
    def action_test_mail(self) -> None:
        try:
            settings = settings_from_values(self._on_screen())
        except SettingsError as err:
            self._say(f"Cannot send a test mail: {err}", error=True)
            return
        self._say(f"Sending a test mail via {settings.notify_smtp_host or '?'} …")
        self._test_mail(settings)

    @work(thread=True, exclusive=True, group="mail", exit_on_error=False)
    def _test_mail(self, settings: Settings) -> None:
        try:
            self.post_message(TestMailFinished(True, send_test_mail(settings)))
        except MailError as err:
            self.post_message(TestMailFinished(False, f"Test mail not sent: {err}"))

    def on_test_mail_finished(self, message: TestMailFinished) -> None:
        self._say(message.text, error=not message.ok)

    def on_echo_finished(self, message: EchoFinished) -> None:
        result = message.result
        if result.ok:
            self._say(f"{result.message} in {result.round_trip_ms:.0f} ms")
        else:
            self._say(result.message, error=True)
