"""Exit codes of ``dicombridge echo`` and ``dicombridge send``: one number per class of failure.

Modelled on DCMTK's ``dcmsend`` (20s: the input, 60s: the network), so a script or a monitoring
check can tell "fix the settings" from "the PACS is down" from "the PACS refused some images"
without reading the message. The same table is the commands' ``--help`` epilog and the README's.
"""

from __future__ import annotations

OK = 0
BAD_SETTINGS = 2  # also argparse's own code for a command-line mistake
BAD_INPUT = 20
CANNOT_CONNECT = 60
ASSOCIATION_REJECTED = 61
DICOM_FAILURE = 62
IMAGES_REFUSED = 65

MEANING = {
    OK: "success: the PACS answered the C-ECHO / stored every image",
    BAD_SETTINGS: "bad command line or settings: no such settings file, invalid value, send.host not set",
    BAD_INPUT: "bad input: no such path, neither a folder nor a ZIP, an unsafe or damaged ZIP, no DICOM files",
    CANNOT_CONNECT: "cannot connect: nothing listens at send.host:send.port, unknown host, TLS handshake failed",
    ASSOCIATION_REJECTED: "the PACS rejected the association (AE titles, or it accepts nothing from us)",
    DICOM_FAILURE: "the association was aborted or ended, or the C-ECHO answered a failure status",
    IMAGES_REFUSED: "some images were refused (failure status, or a SOP class/transfer syntax not accepted)",
}
ECHO_CODES = (OK, BAD_SETTINGS, CANNOT_CONNECT, ASSOCIATION_REJECTED, DICOM_FAILURE)
SEND_CODES = (OK, BAD_SETTINGS, BAD_INPUT, CANNOT_CONNECT, ASSOCIATION_REJECTED, DICOM_FAILURE, IMAGES_REFUSED)


def epilog(codes: tuple[int, ...]) -> str:
    """The ``--help`` text listing ``codes``."""
    return "exit codes:\n" + "\n".join(f"  {code:>2}  {MEANING[code]}" for code in codes)


def for_send_failure(failure: str) -> int:
    """The exit code for a ``TransientSendError.failure`` / ``EchoResult.failure``."""
    from .sender import ASSOCIATION_ABORTED, NO_CONNECTION, REJECTED

    return {NO_CONNECTION: CANNOT_CONNECT, REJECTED: ASSOCIATION_REJECTED,
            ASSOCIATION_ABORTED: DICOM_FAILURE}.get(failure, DICOM_FAILURE)
