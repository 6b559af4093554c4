"""Settings: every setting with inline validation, Save / Reset, Send DICOM Echo and Send test mail.

Help texts and rules come from ``bridge.settings.SETTINGS`` (written once, used for the config
file's comments too). Save writes with tomlkit (comments, order, unknown keys survive) and
hands the new settings to the session, which puts them in force without a restart. Edits not
yet saved are marked, and quitting or Reset asks first. The screen's keys work from any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Footer, Header, Input, Label, Static, Switch

from bridge.settings import (
    SETTINGS,
    SPEC_BY_NAME,
    Settings,
    SettingsError,
    SettingSpec,
    file_values,
    load_settings,
    save_values,
    settings_from_values,
    unknown_keys,
    validate_value,
)

from .folder_picker import FolderPicker
from .messages import SessionReplied
from .status_bar import StatusBar
from .unsaved_prompt import UnsavedPrompt

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


def on_off(value: bool) -> str:
    return "on" if value else "off"


class SettingsScreen(Screen):
    # priority: an Input would otherwise take Ctrl+E (end of line) and the others as its own keys
    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True),
                Binding("ctrl+r", "reset", "Reset", priority=True, show=False),
                Binding("ctrl+e", "echo", "Echo", priority=True),
                Binding("ctrl+t", "test_mail", "Mail", priority=True),
                Binding("ctrl+o", "pick_folder", "Folder", priority=True, show=False)]

    def __init__(self) -> None:
        super().__init__()
        self._saved: dict[str, Any] = {}  # what the file holds, as the widgets show it

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
                        yield Label("off", id=f"{widget_id(spec)}-state", classes="switch-state")
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
        yield Static("", id="dirty")
        yield Static("", id="result")
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()

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

    def _raw(self) -> dict[str, Any]:
        return {spec.name: self.query_one(f"#{widget_id(spec)}").value for spec in SETTINGS}  # type: ignore[attr-defined]

    @property
    def dirty(self) -> bool:
        """Something on screen differs from the file."""
        return bool(self._saved) and self._raw() != self._saved

    def _mark(self) -> None:
        self.query_one("#dirty", Static).update(
            "[b black on yellow] ● unsaved changes [/] Ctrl+S saves, Ctrl+R goes back to the file" if self.dirty
            else "")

    @on(Switch.Changed)
    def _switched(self, event: Switch.Changed) -> None:
        self.query_one(f"#{event.switch.id}-state", Label).update(on_off(event.value))
        self._mark()

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
        self._mark()

    def _say(self, text: str, error: bool = False) -> None:
        self.query_one("#result", Static).update(f"[b red]{escape(text)}[/]" if error else escape(text))

    # -- actions ------------------------------------------------------------------------------
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.save()

    def save(self) -> bool:
        """Write and apply what is on screen; False (and why, on screen) when not saved."""
        path = self.app.session.config_path  # type: ignore[attr-defined]
        try:
            values = self._on_screen()
            settings = save_values(path, values)
        except SettingsError as err:
            self._say(f"Not saved: {err}", error=True)
            return False
        note = self.app.session.apply(settings)  # type: ignore[attr-defined]
        self._saved = self._raw()
        self._mark()
        warnings = unknown_keys(path)
        self._say(f"Saved to {path}." + (f" {note}." if note else "") + "".join(f" Warning: {w}." for w in warnings),
                  error=bool(warnings))
        return True

    @on(Button.Pressed, "#pick-folder")
    def action_pick_folder(self) -> None:
        field = self.query_one("#general-storage-folder", Input)

        def take(folder: Path | None) -> None:
            if folder is not None:
                field.value = str(folder)

        storage = self.app.session.storage  # type: ignore[attr-defined]
        self.app.push_screen(FolderPicker(Path(field.value).expanduser(), storage), take)

    @on(Button.Pressed, "#reset")
    def action_reset(self) -> None:
        if not self.dirty:
            self.reload()
            return

        def decide(choice: str | None) -> None:
            if choice == "save":
                self.save()
            elif choice == "discard":
                self.reload()

        self.app.push_screen(UnsavedPrompt("going back to the saved file"), decide)

    def reload(self) -> None:
        """Show the file's values (at start, on Reset, and when the file changed and nothing is edited)."""
        path = self.app.session.config_path  # type: ignore[attr-defined]
        try:
            load_settings(path)
        except SettingsError as err:
            self._say(f"The saved file is invalid: {err}", error=True)
            return
        self._show(file_values(path))
        self._saved = self._raw()
        self._mark()
        warnings = unknown_keys(path)
        self._say("Showing the saved settings." + "".join(f" Warning: {w}." for w in warnings), error=bool(warnings))

    def file_changed(self) -> None:
        """The file changed on disk: show it unless the admin is editing (then the edits stay)."""
        if not self.dirty and self._raw() != self._file_as_shown():
            self.reload()
            self._say("The settings file changed on disk; showing it.")

    def _file_as_shown(self) -> dict[str, Any]:
        values = file_values(self.app.session.config_path)  # type: ignore[attr-defined]
        return {name: (bool(value) if isinstance(SPEC_BY_NAME[name].default, bool) else
                       ", ".join(value) if isinstance(value, (list, tuple)) else str(value))
                for name, value in values.items()}

    def _settings_on_screen(self, doing: str) -> Settings | None:
        try:
            return settings_from_values(self._on_screen())
        except SettingsError as err:
            self._say(f"Cannot {doing}: {err}", error=True)
            return None

    @on(Button.Pressed, "#echo")
    def action_echo(self) -> None:
        settings = self._settings_on_screen("echo")
        if settings is None:
            return
        if not settings.send_host:
            self._say("Cannot echo: send.host is empty", error=True)
            return
        self._say(f"C-ECHO to {settings.send_ae_title_receiver}@{settings.send_host}:{settings.send_port} …")
        self._echo(settings)

    @work(thread=True, exclusive=True, group="echo", exit_on_error=False)
    def _echo(self, settings: Settings) -> None:
        outcome = self.app.session.echo(settings)  # type: ignore[attr-defined]
        self.post_message(SessionReplied(outcome.ok, outcome.text))

    @on(Button.Pressed, "#test-mail")
    def action_test_mail(self) -> None:
        settings = self._settings_on_screen("send a test mail")
        if settings is None:
            return
        self._say(f"Sending a test mail via {settings.notify_smtp_host or '?'} …")
        self._test_mail(settings)

    @work(thread=True, exclusive=True, group="mail", exit_on_error=False)
    def _test_mail(self, settings: Settings) -> None:
        outcome = self.app.session.test_mail(settings)  # type: ignore[attr-defined]
        self.post_message(SessionReplied(outcome.ok, outcome.text))

    def on_session_replied(self, message: SessionReplied) -> None:
        self._say(message.text, error=not message.ok)
