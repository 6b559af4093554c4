"""Settings: one schema, read from and written to a commented TOML file.

Every setting is described once here (section, key, default, one-line help, validator); that
text becomes the comment in the config file and, later, the help on the Settings screen.
The file is written with tomlkit so an admin's comments, key order and unknown keys survive.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomlkit

from .tls import TlsSetupError, client_context, server_context

APP_NAME = "dicombridge"


class SettingsError(ValueError):
    """A setting is missing its allowed form; the message names key, value and allowed range."""


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number from {low} to {high}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _ae_title(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text of 1-16 characters")
    if not 1 <= len(value) <= 16:
        raise ValueError("must be 1-16 characters long")
    if not value.isascii():
        raise ValueError("must use plain ASCII characters")
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain a backslash or control characters")
    if not value.strip():
        raise ValueError("must not be all spaces")
    return value


def _hex4(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{4}", value):
        raise ValueError('must be 4 hex digits, e.g. "0010"')
    return value.upper()


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL})(\.{_LABEL})*\.?")


def _host(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an IPv4/IPv6 address or a host name")
    if value == "":
        return value  # not configured yet: sending stays off until a host is set
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be an IPv4/IPv6 address or a host name")
    return value


def _list_of(check: Callable[[Any], str]) -> Callable[[Any], list[str]]:
    def check_all(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise ValueError("must be a list, e.g. [\"A\", \"B\"] (empty: accept all)")
        checked = []
        for item in value:
            if item == "":
                raise ValueError("must not contain empty entries")
            checked.append(check(item))
        return checked

    return check_all


def _existing_file(kind: str) -> Callable[[Any], str]:
    """An optional file setting: empty, or a file that exists now (checked at Save and at start)."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be the path of {kind}, or empty")
        if value and not Path(os.path.expanduser(value)).is_file():
            raise ValueError(f"must be the path of an existing {kind.split(' ', 1)[-1]}, or empty")
        return value

    return check


_pem_file = _existing_file("a PEM file")


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
            raise ValueError(f"must be text of up to {limit} characters on one line")
        return value

    return check


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return check


_EMAIL = re.compile(r"[^@\s<>,;\\\"]+@[A-Za-z0-9.-]+")


def _email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL.fullmatch(value):
        raise ValueError("must be an e-mail address like name@example.org")
    return value


def _folder(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a folder path")
    return value


@dataclass(frozen=True)
class SettingSpec:
    """One setting: where it lives in the file, its default, help text and validator."""

    section: str
    key: str
    default: Any
    help: str
    validate: Callable[[Any], Any]
    live: bool = False  # a receive.* setting the running receiver reads itself: no listener restart

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def field(self) -> str:
        """The :class:`Settings` attribute: ``section_key``, or just ``key`` in [general]."""
        return self.key if self.section == "general" else f"{self.section}_{self.key}"

    @property
    def restarts_receiver(self) -> bool:
        """Changing it re-opens the listener: every receive.* setting not read live."""
        return self.section == "receive" and not self.live


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("general", "storage_folder", "~/CrypeDcm",
                "Folder holding Inbox_*/Outbox_* folders, the spool and the logs.", _folder),
    SettingSpec("general", "keep_failed_days", 7,
                "Days to keep entries in Inbox_Failed/Outbox_Failed before the janitor deletes them (1-365).",
                _int_in(1, 365)),
    SettingSpec("general", "min_free_mb", 500,
                "Refuse incoming images (status 0xA700, the PACS retries) when the storage disk has less free space "
                "(MB, 0-1000000).",
                _int_in(0, 1_000_000)),
    SettingSpec("general", "share_with_group", False,
                "Let the bridge's group read ZIPs and logs (for a messaging app under another account); "
                "off: owner only.", _boolean),
    SettingSpec("receive", "enabled", True, "Run the DICOM receiver (Storage SCP).", _boolean),
    SettingSpec("receive", "port", 11112,
                "TCP port the receiver listens on (1-65535; ports below 1024 need privileges on Linux).",
                _int_in(1, 65535)),
    SettingSpec("receive", "ae_title", "CRYPE_DCM",
                "The bridge's own AE title, as configured in the PACS (1-16 characters).", _ae_title),
    SettingSpec("receive", "timeout_seconds", 30,
                "A study is zipped once no image for it arrived for this many seconds (1-3600).",
                _int_in(1, 3600), live=True),
    SettingSpec("receive", "crid_tag_group", "0000",
                'Group of the DICOM text element carrying CRID# recipient IDs (hex; "0000" = not used).', _hex4,
                live=True),
    SettingSpec("receive", "crid_tag_element", "0000",
                'Element of the DICOM text element carrying CRID# recipient IDs (hex; "0000" = not used).', _hex4,
                live=True),
    SettingSpec("receive", "allowed_calling_ae_titles", [],
                "Only these senders' AE titles may send (empty: any); others are rejected.",
                _list_of(_ae_title)),
    SettingSpec("receive", "allowed_hosts", [],
                "Only these IP addresses or host names may connect (empty: any).", _list_of(_host)),
    SettingSpec("receive", "check_called_ae_title", False,
                "Reject associations whose called AE title is not receive.ae_title.", _boolean),
    SettingSpec("receive", "max_associations", 16,
                "Associations (senders) received at once; more are rejected as busy and retried by the PACS "
                "(1-1000). Bare connections that send no association request are closed after 5 s.",
                _int_in(1, 1000)),
    SettingSpec("receive", "sync_before_ack", True,
                "Answer success only once the image is on stable storage (fdatasync); false is faster but a power "
                "cut right after the answer can lose images the PACS believes delivered.", _boolean),
    SettingSpec("receive", "tls_cert", "",
                "PEM certificate (chain) for DICOM over TLS on the receive port; empty: plain DICOM.", _pem_file),
    SettingSpec("receive", "tls_key", "",
                "Unencrypted PEM private key of receive.tls_cert (readable by this user only).", _pem_file),
    SettingSpec("receive", "tls_ca", "",
                "PEM CA certificate(s); when set, senders must present a client certificate signed by it.",
                _pem_file),
    SettingSpec("send", "enabled", False, "Send ZIPs dropped in Outbox_Auto to the PACS.", _boolean),
    SettingSpec("send", "host", "", "PACS host name or IP address.", _host),
    SettingSpec("send", "port", 104, "PACS DICOM port (1-65535).", _int_in(1, 65535)),
    SettingSpec("send", "ae_title_receiver", "CRYPE_DCM", "AE title of the PACS (called AE).", _ae_title),
    SettingSpec("send", "ae_title_sender", "CRYPE_DCM", "Our AE title when sending (calling AE).", _ae_title),
    SettingSpec("send", "retries", 3,
                "Quick retries within one send when the PACS drops the association, times out or answers "
                "0xA700, before the outbox waits it out (0-10).", _int_in(0, 10)),
    SettingSpec("send", "retry_delay_seconds", 10,
                "Wait before the first quick retry; doubled for each further one (1-600).", _int_in(1, 600)),
    SettingSpec("send", "give_up_after_hours", 24,
                "While the PACS is unreachable ZIPs wait in the outbox; after this many hours one goes to "
                "Outbox_Failed (1-720).", _int_in(1, 720)),
    SettingSpec("send", "notify_after_minutes", 15,
                "Ask for attention (log book, mail) when the PACS has been unreachable this long (1-1440).",
                _int_in(1, 1440)),
    SettingSpec("send", "parallel_associations", 1,
                "Associations used at once to send one ZIP; more hide a slow PACS's latency (1-8).",
                _int_in(1, 8)),
    SettingSpec("send", "storage_commitment", False,
                "Ask the PACS to commit the stored images (Storage Commitment) and delete a ZIP only when it "
                "confirms (its report comes to the receiver, or on the same association).", _boolean),
    SettingSpec("send", "commit_timeout_minutes", 10,
                "With send.storage_commitment: no confirmation within this many minutes is handled like an "
                "outage, the ZIP is sent and committed again later (1-1440).", _int_in(1, 1440)),
    SettingSpec("send", "tls", False, "Send over DICOM TLS (use the PACS's TLS port).", _boolean),
    SettingSpec("send", "tls_ca", "",
                "PEM CA certificate(s) that signed the PACS certificate (empty: the system's trusted CAs).",
                _pem_file),
    SettingSpec("send", "tls_cert", "", "PEM client certificate, if the PACS asks for one.", _pem_file),
    SettingSpec("send", "tls_key", "", "Unencrypted PEM private key of send.tls_cert.", _pem_file),
    SettingSpec("notify", "enabled", False,
                "Mail people when something needs them (failures; arrivals if on_arrival).", _boolean),
    SettingSpec("notify", "smtp_host", "", "Mail server (SMTP) host name or IP address.", _host),
    SettingSpec("notify", "smtp_port", 587, "Mail server port (587 STARTTLS, 465 SSL, 25 plain).",
                _int_in(1, 65535)),
    SettingSpec("notify", "smtp_security", "starttls", 'Encryption to the mail server: "starttls", "ssl" or "none".',
                _one_of("starttls", "ssl", "none")),
    SettingSpec("notify", "smtp_user", "", "Mail server login (empty: no login).", _text(256)),
    SettingSpec("notify", "smtp_password", "",
                "Its password; better: smtp_password_file or the DICOMBRIDGE_SMTP_PASSWORD environment variable.",
                _text(256)),
    SettingSpec("notify", "smtp_password_file", "",
                "File holding the mail password (first line), readable by this user only.", _existing_file("a file")),
    SettingSpec("notify", "sender", "dicombridge@localhost", "From address of the mails.", _email),
    SettingSpec("notify", "recipients", [], "Who gets the mails, e.g. [\"it@practice.example\"].",
                _list_of(_email)),
    SettingSpec("notify", "on_failure", True,
                "Mail failures: Inbox_Failed, Outbox_Failed, receiver not listening, disk floor reached.", _boolean),
    SettingSpec("notify", "on_arrival", False, "Mail each study that arrived and was zipped.", _boolean),
    SettingSpec("notify", "no_phi", True,
                "Leave patient name, birth date, recipient IDs and file names out of mails (false: put them in).",
                _boolean),
    SettingSpec("notify", "gather_seconds", 60,
                "Events are gathered this long; more than 3 of a kind become one summary mail (1-3600).",
                _int_in(1, 3600)),
)

SPEC_BY_NAME = {spec.name: spec for spec in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Validated settings in force; built only by :func:`settings_from_mapping`."""

    storage_folder: Path
    keep_failed_days: int
    min_free_mb: int
    share_with_group: bool
    receive_enabled: bool
    receive_port: int
    receive_ae_title: str
    receive_timeout_seconds: int
    receive_crid_tag_group: str
    receive_crid_tag_element: str
    receive_allowed_calling_ae_titles: tuple[str, ...]
    receive_allowed_hosts: tuple[str, ...]
    receive_check_called_ae_title: bool
    receive_max_associations: int
    receive_sync_before_ack: bool
    receive_tls_cert: str
    receive_tls_key: str
    receive_tls_ca: str
    send_enabled: bool
    send_host: str
    send_port: int
    send_ae_title_receiver: str
    send_ae_title_sender: str
    send_retries: int
    send_retry_delay_seconds: int
    send_give_up_after_hours: int
    send_notify_after_minutes: int
    send_parallel_associations: int
    send_storage_commitment: bool
    send_commit_timeout_minutes: int
    send_tls: bool
    send_tls_ca: str
    send_tls_cert: str
    send_tls_key: str
    notify_enabled: bool
    notify_smtp_host: str
    notify_smtp_port: int
    notify_smtp_security: str
    notify_smtp_user: str
    notify_smtp_password: str = field(repr=False)  # never printed, never logged
    notify_smtp_password_file: str
    notify_sender: str
    notify_recipients: tuple[str, ...]
    notify_on_failure: bool
    notify_on_arrival: bool
    notify_no_phi: bool
    notify_gather_seconds: int
    source: Path | None = field(default=None, compare=False)

    @property
    def crid_tag(self) -> int | None:
        """The CRID element as a pydicom tag number, or None when not configured (0000,0000)."""
        tag = (int(self.receive_crid_tag_group, 16) << 16) | int(self.receive_crid_tag_element, 16)
        return tag or None


def validate_value(name: str, value: Any) -> Any:
    """Check one setting; raise SettingsError naming the key, the bad value and the rule."""
    spec = SPEC_BY_NAME[name]
    try:
        return spec.validate(value)
    except ValueError as err:
        raise SettingsError(f"setting {name} = {value!r} is invalid: it {err}") from None


def settings_from_mapping(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Build Settings from a parsed TOML mapping; missing keys take their defaults."""
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        section = data.get(spec.section, {})
        if not isinstance(section, dict):
            raise SettingsError(f"[{spec.section}] must be a table of settings")
        raw = section.get(spec.key, spec.default)
        if hasattr(raw, "unwrap"):
            raw = raw.unwrap()
        values[spec.field] = validate_value(spec.name, raw)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)  # Settings is frozen and compared: no lists inside
    folder = Path(os.path.expanduser(values.pop("storage_folder")))
    settings = Settings(storage_folder=folder, source=source, **values)
    try:  # the files must also fit together: load them now rather than fail at the first association
        receive_tls_context(settings)
        send_tls_context(settings)
    except TlsSetupError as err:
        raise SettingsError(str(err)) from None
    if settings.notify_enabled and not (settings.notify_smtp_host and settings.notify_recipients):
        raise SettingsError("notify.enabled needs notify.smtp_host and at least one address in notify.recipients")
    return settings


def receive_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The receiver's TLS context, or None for plain DICOM."""
    return server_context(settings.receive_tls_cert, settings.receive_tls_key, settings.receive_tls_ca)


def send_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The sender's TLS context, or None for plain DICOM."""
    return client_context(settings.send_tls, settings.send_tls_ca, settings.send_tls_cert, settings.send_tls_key)


def _nest(values: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """Put flat ``section.key`` values into a sections mapping (as the TOML file has them)."""
    for name, value in values.items():
        section, key = name.split(".", 1)
        into.setdefault(section, {})[key] = value
    return into


def settings_from_values(values: dict[str, Any]) -> Settings:
    """Settings from flat ``section.key`` values (as on the Settings screen)."""
    return settings_from_mapping(_nest(values, {}))


def default_config_path() -> Path:
    """Where the config lives when --config is not given (per-user config folder)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_document() -> tomlkit.TOMLDocument:
    """A complete config file: every setting with its default and a one-line comment."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("DicomBridge settings. Edit here or in the terminal UI (Settings)."))
    doc.add(tomlkit.comment("Changes are validated; an invalid value is refused with a message."))
    for section_name in dict.fromkeys(spec.section for spec in SETTINGS):  # in schema order
        table = tomlkit.table()
        for spec in SETTINGS:
            if spec.section != section_name:
                continue
            table.add(tomlkit.comment(spec.help))
            table.add(spec.key, spec.default)
        doc.add(section_name, table)
    return doc


def unknown_keys(path: Path | None) -> list[str]:
    """Warnings for keys in the file that no setting has, each naming the nearest known key.

    A typo (``receive.timout_seconds``) would otherwise be ignored and the default used.
    """
    if path is None or not path.exists():
        return []
    try:
        data = tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    except (OSError, tomlkit.exceptions.TOMLKitError):
        return []
    known = list(SPEC_BY_NAME)
    warnings = []
    for section, table in data.items():
        names = [f"{section}.{key}" for key in table] if isinstance(table, dict) else [section]
        for name in names:
            if name in SPEC_BY_NAME:
                continue
            nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" (did you mean {nearest[0]}?)" if nearest else ""
            warnings.append(f"unknown setting {name} in {path} is ignored{hint}")
    return warnings


def load_settings(path: Path) -> Settings:
    """Read and validate the config file, creating it with defaults when it does not exist."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(path, tomlkit.dumps(default_document()))
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.TOMLKitError as err:
        raise SettingsError(f"config file {path} is not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"config file {path} cannot be read or created: {err}") from None
    return settings_from_mapping(document.unwrap(), source=path)


def file_values(path: Path) -> dict[str, Any]:
    """Values as written in the file ("~" not expanded), defaults for missing keys."""
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else default_document()
    data = document.unwrap()
    return {spec.name: data.get(spec.section, {}).get(spec.key, spec.default) for spec in SETTINGS}


def save_values(path: Path, changes: dict[str, Any]) -> Settings:
    """Validate and write changed values into the file, keeping comments and unknown keys.

    Nothing is written if any value is invalid, so the file always holds good settings.
    """
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else default_document()
    settings = settings_from_mapping(_nest(changes, document.unwrap()), source=path)
    for name, value in changes.items():
        section, key = name.split(".", 1)
        if section not in document:
            document.add(section, tomlkit.table())
        document[section][key] = value
    tmp = path.with_name(path.name + ".tmp")
    _write_private(tmp, tomlkit.dumps(document), mode=path.stat().st_mode & 0o777 if path.exists() else 0o600)
    os.replace(tmp, path)
    return settings


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a config file readable by its owner only (it may name key files and mail accounts)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)  # O_CREAT's mode does not apply to a file that already existed
