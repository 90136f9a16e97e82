"""TPM 2.0 backend (tpm2-pytss ESAPI): device keys, quotes, certification, sealing.

The only place in agentkeys that imports ``tpm2_pytss``; every blocking call
runs in ``trio.to_thread`` under a per-connection CapacityLimiter.
"""

from attest.tpm._esapi import (
    AK_HANDLE,
    BUNDLE_PCRS,
    K10_HANDLE,
    Tpm,
    TpmDeviceKey,
    TpmSealer,
    tpm_enroll_pin,
    tpm_pin_answer,
)

__all__ = [
    "AK_HANDLE",
    "BUNDLE_PCRS",
    "K10_HANDLE",
    "Tpm",
    "TpmDeviceKey",
    "TpmSealer",
    "tpm_enroll_pin",
    "tpm_pin_answer",
]
