"""The ``peers`` mark (conftest) finds tests that reach DCMTK, Orthanc or dicom3tools however
they get there, and leaves the rest in the fast layer (``-m "not peers"``)."""

from __future__ import annotations

import pytest

from . import pki, test_naming, test_receive_dcmtk, test_send
from .conftest import reaches_peers
from .pacs import Orthanc, StoreSCP


@pytest.mark.parametrize("root", [
    test_receive_dcmtk.test_echo_from_dcmtk_succeeds,  # imports dcmtk inside the function
    test_send.test_zip_reaches_dcmtk_storescp,  # through StoreSCP
    Orthanc, StoreSCP,  # classes: through their methods
    test_send.orthanc,  # a fixture
], ids=lambda root: getattr(root, "__name__", str(root)))
def test_tests_reaching_a_dicom_peer_are_marked(root):
    assert reaches_peers([root])


@pytest.mark.parametrize("root", [test_naming.test_the_readmes_example, pki.make_pki],
                         ids=lambda root: root.__name__)
def test_tests_without_a_dicom_peer_are_not(root):
    assert not reaches_peers([root])  # openssl (pki) is a tool, not a DICOM peer
