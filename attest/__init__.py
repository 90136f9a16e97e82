"""Caller attestation (E1, E2, E3) and device-key backends (TPM 2.0, software).

SPEC.md sections 2, 7 (attest) and 8.
"""
