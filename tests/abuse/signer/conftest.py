"""The real signer (mutual TLS, real anvil with the contracts, a real sealer) for abuse tests."""

from __future__ import annotations

from tests.service.conftest import foreign_pki  # noqa: F401
from tests.signer.conftest import chain, pki, sealer, signer  # noqa: F401
