"""The PACS named in the settings, and how to send to it: one mapping for every sender.

The outbox, ``dicombridge send``, ``dicombridge echo`` and the Settings screen's Echo all turn
the settings into a target and sending options here, so a new sending setting is added once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sender import NETWORK_TIMEOUT_SECONDS, PacsTarget
from .settings import Settings, send_tls_context


@dataclass(frozen=True)
class SendSettings:
    """What one send needs: the PACS, the retry policy and how many associations to use."""

    target: PacsTarget
    retries: int
    retry_delay_seconds: float
    parallel_associations: int = 1
    give_up_after_hours: float = 24
    notify_after_minutes: float = 15
    storage_commitment: bool = False
    commit_timeout_minutes: float = 10
    reports_to_receiver: bool = True  # the receiver takes N-EVENT-REPORTs on the PACS's own association


def pacs_target(settings: Settings, network_timeout_seconds: float = NETWORK_TIMEOUT_SECONDS) -> PacsTarget:
    """The PACS named in the settings, for sending and for C-ECHO."""
    return PacsTarget(host=settings.send_host, port=settings.send_port,
                      called_ae=settings.send_ae_title_receiver, calling_ae=settings.send_ae_title_sender,
                      network_timeout_seconds=network_timeout_seconds, tls=send_tls_context(settings))


def send_options(settings: Settings) -> SendSettings:
    """The sending options in force (read again for every ZIP, so a saved change applies)."""
    return SendSettings(target=pacs_target(settings), retries=settings.send_retries,
                        retry_delay_seconds=settings.send_retry_delay_seconds,
                        parallel_associations=settings.send_parallel_associations,
                        give_up_after_hours=settings.send_give_up_after_hours,
                        notify_after_minutes=settings.send_notify_after_minutes,
                        storage_commitment=settings.send_storage_commitment,
                        commit_timeout_minutes=settings.send_commit_timeout_minutes,
                        reports_to_receiver=settings.receive_enabled)
