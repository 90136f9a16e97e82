"""Every error code agentkeys answers with: one status and one meaning, across all services.

An error body is ``{error, reason}`` (``agentkeys.errors.AgentkeysError.to_json``); ``error``
is a code from :data:`CODES`, and whichever service or command raises it, the HTTP status
is the one recorded here and the code means what is written here. The classes that carry
a code (``error``/``status`` class variables, one exception tree per package) must agree
with this table: tests/core/test_error_codes.py walks every error class of every package
(``agentkeys``, ``attest``) and fails on a code that is not registered, on a class whose
status differs from its code's, and on a registered code no class carries.

To add a code: declare the leaf in its package's ``errors.py`` and add one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CODES", "ErrorCode", "status_of"]


@dataclass(frozen=True)
class ErrorCode:
    """One error code: the HTTP status every service answers it with, and what it means."""

    status: int
    meaning: str


CODES: Mapping[str, ErrorCode] = MappingProxyType(
    {
        "actor_not_agent_of_operator": ErrorCode(
            403,
            (
                "actor != operator and the chain does not record the actor as an agent of the "
                "operator."
            ),
        ),
        "address_invalid": ErrorCode(
            400, "``dev fund`` was given something that is not a 0x address."
        ),
        "answer_malformed": ErrorCode(
            502, "A peer's 200 answer breaks its wire contract (agentkeys.clients)."
        ),
        "attest_error": ErrorCode(500, "Branch: anything attest refuses or cannot do."),
        "attestation_key_not_trusted": ErrorCode(
            403,
            (
                "The signing key lacks the required TPM attributes, or the pin/bundle names no "
                "such key."
            ),
        ),
        "attestation_malformed": ErrorCode(400, "A TPM structure, pin or bundle does not parse."),
        "attestation_nonce_mismatch": ErrorCode(
            403, "A quote, certification or pin answer answers another challenge."
        ),
        "attestation_pcr_mismatch": ErrorCode(
            403, "The quoted PCR state differs from the expected one."
        ),
        "attestation_refused": ErrorCode(
            403, "Branch: a quote, certification or E3 pin answer is refused."
        ),
        "attestation_signature_invalid": ErrorCode(
            403, "A quote, certification, pin answer or bundle is not signed by the expected key."
        ),
        "audit_chain_broken": ErrorCode(
            500, "Verification failed; ``row`` is the 1-based number of the first bad row."
        ),
        "audit_log_error": ErrorCode(500, "The audit log cannot be opened, read or appended to."),
        "bad_request": ErrorCode(
            400, "The request is not acceptable as sent (malformed path, header, body or framing)."
        ),
        "binding_denied": ErrorCode(
            403, "Branch: a device-binding rule refused a cap (at the broker's mint or the worker)."
        ),
        "binding_mismatch": ErrorCode(
            403, "The device is bound to another operator_omni or actor_omni than the cap's."
        ),
        "body_too_large": ErrorCode(413, "The request body exceeds the service's bound."),
        "broker_error": ErrorCode(500, "Base of the broker's errors."),
        "broker_refused": ErrorCode(
            400, "The broker answered with an error (its ``error`` code is in the reason)."
        ),
        "broker_session_refused": ErrorCode(
            401,
            "CLI: the broker refused the home's session (expired, revoked or invalid there; exit "
            "3).",
        ),
        "broker_unreachable": ErrorCode(503, "The broker did not answer."),
        "caller_gone": ErrorCode(403, "The peer process exited or its pid was reused."),
        "caller_not_allowed": ErrorCode(
            403, "No policy entry matches the caller's (uid, executable)."
        ),
        "caller_not_local": ErrorCode(
            403, "E2: the peer is not loopback, or not in this network namespace."
        ),
        "caller_unidentified": ErrorCode(
            403, "The peer of a connection could not be attested (E1/E2)."
        ),
        "cap_audience_mismatch": ErrorCode(403, "``aud`` names a different worker."),
        "cap_denied": ErrorCode(
            403, "Branch: a cap mint refused after the chain checks (SPEC section 5)."
        ),
        "cap_error": ErrorCode(401, "Branch: a capability token was refused."),
        "cap_expired": ErrorCode(401, "``now`` is at or past ``expires_at``."),
        "cap_invalid": ErrorCode(
            400, "Malformed token, wire object or payload (types, fields, canonical form)."
        ),
        "cap_key_unknown": ErrorCode(401, "The token's ``kid`` is not in the trusted cap key set."),
        "cap_keys_unavailable": ErrorCode(
            503, "The cap key set could not be fetched (and none is cached)."
        ),
        "cap_lifetime_too_long": ErrorCode(
            401, "``expires_at - issued_at`` exceeds the maximum cap lifetime (1800 s)."
        ),
        "cap_missing": ErrorCode(401, "No ``Authorization: Cap <token>`` header."),
        "cap_not_yet_valid": ErrorCode(
            401, "``issued_at`` lies in the future by more than the allowed clock skew."
        ),
        "cap_operation_mismatch": ErrorCode(403, "``op`` is not the operation being performed."),
        "cap_signature_invalid": ErrorCode(
            401, "``broker_sig`` does not verify over the canonical payload bytes."
        ),
        "certificate_exists": ErrorCode(
            500, "A CA or certificate file already exists and replacing it was not requested."
        ),
        "certificate_rejected": ErrorCode(
            403, "A peer certificate is not a valid role certificate of this deployment."
        ),
        "chain_abi_error": ErrorCode(
            502, "A value could not be ABI-encoded, or data from the chain could not be decoded."
        ),
        "chain_check_failed": ErrorCode(
            403, "Branch: the worker's independent chain re-check refused the cap."
        ),
        "chain_config_invalid": ErrorCode(
            500, "A chain profile, deployment record or contract artifact is missing or malformed."
        ),
        "chain_error": ErrorCode(502, "Base of every chain-layer failure."),
        "chain_reorg_too_deep": ErrorCode(
            503, "A block the watcher had already delivered as confirmed was replaced by a reorg."
        ),
        "chain_reverted": ErrorCode(409, "A call or transaction reverted."),
        "chain_rpc_error": ErrorCode(
            502, "The node answered a JSON-RPC error that is not a revert."
        ),
        "chain_insufficient_funds": ErrorCode(
            402, "The sending wallet cannot pay the gas; the reason names the address to fund."
        ),
        "chain_transaction_failed": ErrorCode(
            502, "A transaction was mined with status 0 or was not mined before the deadline."
        ),
        "chain_unavailable": ErrorCode(503, "The chain could not be read: fail closed."),
        "challenge_unknown": ErrorCode(
            401, "No such challenge for this session (never issued, already used or expired)."
        ),
        "client_error": ErrorCode(502, "Branch: a peer gave no usable answer to a typed client."),
        "cli_error": ErrorCode(
            400, "Base of the command line's own errors; ``exit_code`` is the process exit status."
        ),
        "config_error": ErrorCode(
            500, "The configuration is missing, malformed or names an unknown option."
        ),
        "credential_not_found": ErrorCode(
            404, "Neither the v2 nor the v1 key holds the credential."
        ),
        "credential_refused": ErrorCode(
            403,
            "The broker or the worker refused to hand out the credential (scope, binding, ...).",
        ),
        "credential_unavailable": ErrorCode(
            502, "The credential could not be obtained (transport failure, malformed answer)."
        ),
        "daemon_error": ErrorCode(500, "Base of every error the daemon raises."),
        "demo_failed": ErrorCode(500, "A demo step did not show what it should."),
        "denied": ErrorCode(
            403, "Branch: the request was refused by the host-local policy or the chain scope."
        ),
        "dev_stack_error": ErrorCode(500, "The development stack cannot start or be controlled."),
        "dev_stack_running": ErrorCode(
            500, "Another ``dev up`` already runs on this state directory."
        ),
        "device_key_error": ErrorCode(500, "A device key (K10) cannot be created, loaded or used."),
        "device_challenges_pending": ErrorCode(
            429, "The device already holds as many unexpired sign-in challenges as allowed."
        ),
        "device_not_registered": ErrorCode(403, "The device_key_hash is not in SidecarRegistry."),
        "device_revoked": ErrorCode(403, "The device is registered but revoked."),
        "device_session_not_allowed": ErrorCode(
            403,
            (
                "A device session (the sidecar's) was used on a route it may not use, or to "
                "mint anything but a fetch cap for its own device and actor."
            ),
        ),
        "device_signature_rejected": ErrorCode(
            401, "The K10 signature over a device sign-in challenge does not verify."
        ),
        "devstack_binary_not_found": ErrorCode(
            500, "A component's program is missing; the reason says what installs it."
        ),
        "devstack_error": ErrorCode(
            500, "Base for every failure of the development-stack launchers."
        ),
        "devstack_iam_config_invalid": ErrorCode(
            500, "The IAM document is inconsistent (e.g. a role names an unknown policy)."
        ),
        "devstack_no_free_port": ErrorCode(
            500, "No usable free port (or port set) on 127.0.0.1 was found."
        ),
        "devstack_start_failed": ErrorCode(
            500, "The component exited early or was not ready before its startup timeout."
        ),
        "duty_failed": ErrorCode(500, "A supervised duty failed too often; the daemon stops."),
        "email_delivery_failed": ErrorCode(
            502, "The SMTP relay could not be reached or refused the message."
        ),
        "email_link_error": ErrorCode(401, "Branch: the email magic link or its sign-in request."),
        "email_rate_limited": ErrorCode(
            429, "Too many unexpired sign-in requests for one address (no more mail is sent)."
        ),
        "email_request_unknown": ErrorCode(
            404, "No such sign-in request, or its session was already collected."
        ),
        "email_token_expired": ErrorCode(401, "The link is older than its lifetime (10 minutes)."),
        "email_token_invalid": ErrorCode(401, "Unknown or already used link token."),
        "envelope_context_missing": ErrorCode(
            400,
            "The caller did not supply the wallet / actor_omni this version's AAD is built from.",
        ),
        "envelope_error": ErrorCode(400, "Branch: a credential envelope could not be opened."),
        "envelope_tampered": ErrorCode(
            400,
            (
                "AES-GCM authentication failed: wrong KEK, wrong AAD (wallet, actor, service, "
                "header) or modified bytes. GCM cannot tell these apart, so neither can we."
            ),
        ),
        "envelope_truncated": ErrorCode(
            400, "Shorter than the minimum for its version (29 bytes for 0x01/0x02, 33 for 0x04)."
        ),
        "envelope_version_unknown": ErrorCode(400, "The version byte is not 0x01, 0x02 or 0x04."),
        "epoch_error": ErrorCode(409, "The requested K3 epoch cannot be used for this purpose."),
        "epoch_in_future": ErrorCode(409, "The epoch is ahead of the chain's current epoch."),
        "epoch_mismatch": ErrorCode(
            403, "The request names a K3 epoch other than the chain's current one."
        ),
        "epoch_not_current": ErrorCode(409, "Encryption must use the chain's current epoch."),
        "epoch_unavailable": ErrorCode(
            503, "The signer has not read the chain's epoch yet or cannot reach the chain."
        ),
        "epoch_unknown": ErrorCode(409, "The signer holds no K3 for that (past) epoch."),
        "first_master_request_invalid": ErrorCode(
            400, "A device field of a first-master approval request is malformed."
        ),
        "forbidden": ErrorCode(403, "The caller's role may not use this route."),
        "format_error": ErrorCode(
            400,
            (
                "Input that fails one of the core formats' checks (identifiers, envelopes, "
                "caps, PoP)."
            ),
        ),
        "insecure_file": ErrorCode(
            500, "A configuration or key file (or its directory) can be changed or read by others."
        ),
        "insecure_path": ErrorCode(
            500,
            "A key or socket path is a symlink, wider than 0600/0700, or owned by someone else.",
        ),
        "internal_error": ErrorCode(
            500, "An unexpected failure on the server side; nothing is said about it."
        ),
        "invalid_agent_label": ErrorCode(
            400, "Agent label outside ``^[a-z0-9-]{1,32}$`` (SPEC section 3)."
        ),
        "invalid_encoding": ErrorCode(
            400,
            "Text that is not valid strict base64url, hex or JSON where one of those is required.",
        ),
        "invalid_epoch": ErrorCode(
            400, "A K3 epoch that is not an integer in 0..2^32-1 (the u32 of the 0x04 header)."
        ),
        "invalid_identifier": ErrorCode(
            400,
            "Not a valid 32-byte identifier, wallet address or identity value (SPEC section 3).",
        ),
        "invalid_key_material": ErrorCode(
            400, "A key of the wrong type, curve or length, or a malformed JWK / JWKS."
        ),
        "invalid_service_name": ErrorCode(
            400,
            (
                "Service name outside ``^[a-z0-9][a-z0-9._-]{0,63}$`` after lowercasing (SPEC "
                "section 3)."
            ),
        ),
        "k10_proof_rejected": ErrorCode(
            401, "The K10 signature over the enrollment challenge does not verify."
        ),
        "k10_signature_rejected": ErrorCode(
            400, "The K10 signature does not verify (or is malformed)."
        ),
        "k11_assertion_rejected": ErrorCode(
            400, "The WebAuthn assertion does not verify against the expectations."
        ),
        "k11_assertion_replayed": ErrorCode(
            409, "This very assertion already approved a K4 signature (an assertion is single-use)."
        ),
        "k4_approval_refused": ErrorCode(
            403, "The signer refused K4's first-master approval (its error code is in the reason)."
        ),
        "kek_request_invalid": ErrorCode(
            400, "A KEK request mixes or lacks the fields of its version."
        ),
        "key_derivation_exhausted": ErrorCode(
            500,
            (
                "K4 derivation produced no valid secp256k1 scalar in 16 attempts (probability "
                "~2^-2000)."
            ),
        ),
        "key_store_error": ErrorCode(
            500, "The sealed key state is missing, corrupt or cannot be unsealed."
        ),
        "legacy_backend_error": ErrorCode(500, "Base of the legacy backend's own errors."),
        "legacy_identity_required": ErrorCode(
            409,
            "A legacy (v1 KEK) envelope exists but the request named no ``legacy_identity_omni``.",
        ),
        "legacy_scope_denied": ErrorCode(403, "The client-side scope check refused the service."),
        "legacy_token_refused": ErrorCode(
            502, "The broker did not mint a web-identity token (the reason carries its code)."
        ),
        "lifespan_failed": ErrorCode(
            500, "An app served by a listener failed its ASGI lifespan startup or shutdown."
        ),
        "listener_error": ErrorCode(
            500, "Branch: a listener refused a connection or could not serve its app."
        ),
        "malformed_json": ErrorCode(400, "The body is not a single well-formed JSON object."),
        "master_only": ErrorCode(403, "store, teardown and list are for a master device."),
        "master_wallet_invalid": ErrorCode(
            409, "The registry has no master wallet for the operator, or it does not hash to it."
        ),
        "method_not_allowed": ErrorCode(405, "The route exists but not for this method."),
        "migration_failed": ErrorCode(
            500, "A migrated copy did not read back identical; nothing was reported migrated."
        ),
        "missing_field": ErrorCode(400, "A required JSON field is absent."),
        "no_dev_stack": ErrorCode(
            400, "``dev fund`` found no running stack to fund on (and no ``--rpc-url``)."
        ),
        "no_operator_state": ErrorCode(400, "No operator state on this machine."),
        "no_session": ErrorCode(400, "No usable broker session in the agentkeys home."),
        "not_found": ErrorCode(404, "No such route."),
        "oidc_refused": ErrorCode(400, "A token would carry an empty or non-canonical tag value."),
        "operator_already_registered": ErrorCode(
            409, "The K4 wallet's operator already has a master wallet on chain: K4 signs no more."
        ),
        "operator_mismatch": ErrorCode(
            403, "The session's subject is not the request's operator_omni."
        ),
        "operator_state_invalid": ErrorCode(
            400, "The operator state file is unreadable or malformed."
        ),
        "passkey_approval_required": ErrorCode(
            403,
            (
                "The identity already has a passkey: a new one needs that passkey's approval, "
                "and the approval given is missing or not by one of them."
            ),
        ),
        "passkey_assertion_rejected": ErrorCode(
            401, "The assertion does not verify (origin, challenge, rpId, flags, signature)."
        ),
        "passkey_assertion_required": ErrorCode(
            401, "The request needs a fresh passkey assertion (the operator has a master on chain)."
        ),
        "passkey_cancelled": ErrorCode(
            400,
            "The browser's WebAuthn call failed (cancelled, timed out in the browser, no device).",
        ),
        "passkey_error": ErrorCode(401, "Branch: WebAuthn enrollment or assertion."),
        "passkey_not_chain_master": ErrorCode(
            403,
            (
                "The operator has a master on chain, and this passkey is not the one registered "
                "there for a live master device of that operator."
            ),
        ),
        "passkey_not_enrolled": ErrorCode(
            403, "The identity has no enrolled passkey (or not this credential)."
        ),
        "passkey_page_error": ErrorCode(
            400, "The passkey ceremony through the local page did not produce a usable answer."
        ),
        "passkey_registration_rejected": ErrorCode(
            401,
            "The registration response does not verify (origin, challenge, rpId, flags, format).",
        ),
        "passkey_response_invalid": ErrorCode(
            400, "The posted credential is malformed, or its challenge/origin/rpId/flags are wrong."
        ),
        "passkey_sign_count_replayed": ErrorCode(
            401, "The authenticator's sign count did not increase: a cloned or replayed assertion."
        ),
        "passkey_timeout": ErrorCode(400, "The page expired before a result was posted."),
        "passkey_wrong_credential": ErrorCode(
            400, "The assertion comes from another passkey, or its signature does not verify."
        ),
        "peer_refused": ErrorCode(
            502, "A peer answered a typed client with a non-200 ``{error, reason}``."
        ),
        "peer_unreachable": ErrorCode(
            503, "A broker, worker or signer did not answer a typed client."
        ),
        "peer_untrusted": ErrorCode(
            502, "A mutual-TLS peer of a typed client failed the handshake or its role check."
        ),
        "pki_error": ErrorCode(500, "Base of PKI failures."),
        "pki_file_error": ErrorCode(
            500, "A PKI file or directory is missing, unreadable or has unsafe permissions."
        ),
        "policy_invalid": ErrorCode(
            500, "The host-local policy file is missing, unsafe or malformed."
        ),
        "policy_render_error": ErrorCode(
            500, "A policy document could not be rendered (unsafe value, missing value, bad JSON)."
        ),
        "pop_error": ErrorCode(401, "Branch: a K10 proof of possession was refused."),
        "pop_invalid": ErrorCode(400, "Malformed PoP claims or signature encoding."),
        "pop_key_mismatch": ErrorCode(
            401, "The K10 public key does not hash to the claimed ``device_key_hash``."
        ),
        "pop_missing": ErrorCode(
            401, "No ``Agentkeys-Pop`` header: a cap without its K10 proof is refused."
        ),
        "pop_nonce_registry_full": ErrorCode(
            503,
            (
                "The nonce registry is full of unexpired nonces; new requests are refused (fail "
                "closed)."
            ),
        ),
        "pop_nonce_reused": ErrorCode(
            401, "The PoP nonce was already used within its freshness window."
        ),
        "pop_rejected": ErrorCode(
            401, "The PoP is malformed, names another key, or its signature does not verify."
        ),
        "pop_signature_invalid": ErrorCode(
            401, "The K10 signature does not verify over the rebuilt PoP message."
        ),
        "pop_stale": ErrorCode(401, "The PoP timestamp is older than the freshness window."),
        "pop_timestamp_in_future": ErrorCode(
            401, "The PoP timestamp is ahead of ``now`` by more than the allowed skew."
        ),
        "quota_exceeded": ErrorCode(
            429, "A per-(caller, service) quota is used up; retry after ``retry_after`` seconds."
        ),
        "read_only_scope": ErrorCode(403, "A write operation on a read-only scope."),
        "registry_unavailable": ErrorCode(
            503, "The SidecarRegistry cannot be read (or the signer was started without it)."
        ),
        "rejected": ErrorCode(
            409,
            "The request conflicts with what the chain says (already present, unknown, revoked).",
        ),
        "relay_disabled": ErrorCode(404, "Hosted-relay mode is not configured on this broker."),
        "relay_device_not_authorised": ErrorCode(
            403,
            "The relay's approving device is not a live master of the operator with the role "
            "the change needs.",
        ),
        "relay_k10_invalid": ErrorCode(
            403,
            "A relayed K10 signature (the master's, or a new device's binding proof) does not "
            "verify.",
        ),
        "relay_k11_invalid": ErrorCode(
            403,
            "The relayed passkey assertion is not a fresh one over this very change (replayed, "
            "stale or another relying party's).",
        ),
        "relay_passkey_refused": ErrorCode(
            403,
            "CLI: the broker's relay refused the passkey assertion (``relay_k11_invalid``; "
            "exit 4).",
        ),
        "relay_refused": ErrorCode(
            403, "CLI: the broker's relay refused a master mutation (its code is in the reason)."
        ),
        "relay_rejected": ErrorCode(
            403, "The relay will not submit the mutation (malformed, or the contract refused it)."
        ),
        "replayed_nonce": ErrorCode(401, "The PoP nonce was already used within its window."),
        "request_refused": ErrorCode(400, "The request is malformed (headers or body)."),
        "request_timeout": ErrorCode(
            408, "The request body did not arrive whole within ``listen.body_timeout``."
        ),
        "request_too_large": ErrorCode(413, "The request body exceeds the configured bound."),
        "role_missing": ErrorCode(403, "The device lacks the CAP_MINT role."),
        "route_not_allowed": ErrorCode(
            403, "The method and path are outside the service's allowlist."
        ),
        "route_table_error": ErrorCode(
            500, "The route table and the authorization table disagree (raised at start-up)."
        ),
        "scope_revoked": ErrorCode(
            403, "The chain revoked the actor's scope for the service, or this device."
        ),
        "secret_unavailable": ErrorCode(
            400, "A secret could not be read (empty, unreadable, or no terminal to prompt on)."
        ),
        "service_not_allowed": ErrorCode(
            403, "The caller's policy entry does not list the service."
        ),
        "service_not_in_scope": ErrorCode(
            403, "The service is not in the actor's scope entry (or there is no entry)."
        ),
        "service_unavailable": ErrorCode(
            503, "The service cannot answer right now (e.g. still starting, dependency down)."
        ),
        "session_error": ErrorCode(401, "Branch: the request's session is not acceptable."),
        "session_expired": ErrorCode(401, "The session is past its ``exp``."),
        "session_invalid": ErrorCode(
            401, "Malformed token, unknown kid, bad signature, wrong issuer or audience."
        ),
        "session_missing": ErrorCode(401, "No ``Authorization: Bearer <session>`` header."),
        "session_revoked": ErrorCode(
            401, "The session was revoked (or the state store does not know it)."
        ),
        "session_stage_mismatch": ErrorCode(
            403, "A J0 session where a J1 is required, or the reverse."
        ),
        "session_unavailable": ErrorCode(
            503,
            (
                "The sidecar holds no valid device session (not signed in yet, renewal failing, "
                "or expired); the reason says which, and it recovers by itself."
            ),
        ),
        "sidecar_refused": ErrorCode(
            400, "The broker or the worker refused (their error code is in the reason)."
        ),
        "signature_invalid": ErrorCode(
            400, "A well-formed signature that does not recover to a key or does not verify."
        ),
        "signature_malformed": ErrorCode(
            400, "A signature of the wrong length or form (e.g. sig65 with v outside {0, 1})."
        ),
        "signer_error": ErrorCode(500, "Base of the signer's errors."),
        "signer_failed": ErrorCode(
            502, "The signer answered, but wrongly: a 5xx, a malformed answer, or another approval."
        ),
        "signer_unavailable": ErrorCode(
            503, "The signer was not reached (connection refused or reset, timeout): retry later."
        ),
        "siwe_address_mismatch": ErrorCode(
            401, "The signature recovers to another address than the message's."
        ),
        "siwe_chain_mismatch": ErrorCode(401, "The message names another chain id."),
        "siwe_domain_mismatch": ErrorCode(401, "The message is for another domain (or scheme)."),
        "siwe_expired": ErrorCode(
            401, "``now`` is at or past the expiration time, or the message is older than allowed."
        ),
        "siwe_format_error": ErrorCode(400, "Branch: text that is not an EIP-4361 message."),
        "siwe_invalid_address": ErrorCode(
            400, "The address is not ``0x`` + 40 hex digits in EIP-55 checksum form."
        ),
        "siwe_invalid_chain_id": ErrorCode(
            400, "The chain id is not a decimal integer without leading zeros."
        ),
        "siwe_invalid_domain": ErrorCode(
            400, "The scheme or domain is not an RFC 3986 scheme / authority."
        ),
        "siwe_invalid_nonce": ErrorCode(
            400, "The nonce is not at least 8 ASCII letters or digits."
        ),
        "siwe_invalid_request_id": ErrorCode(
            400, "The request id has characters outside RFC 3986 ``pchar``."
        ),
        "siwe_invalid_resource": ErrorCode(
            400, "A resource line is not ``- `` followed by an RFC 3986 URI."
        ),
        "siwe_invalid_statement": ErrorCode(
            400, "The statement has characters outside RFC 3986 reserved / unreserved / space."
        ),
        "siwe_invalid_timestamp": ErrorCode(400, "A timestamp is not an RFC 3339 date-time."),
        "siwe_invalid_uri": ErrorCode(400, "The URI is not an absolute RFC 3986 URI."),
        "siwe_invalid_version": ErrorCode(400, "The version is not ``1``."),
        "siwe_malformed": ErrorCode(
            400,
            (
                "Wrong line structure: missing, repeated, reordered or unknown lines, CR, "
                "trailing LF."
            ),
        ),
        "siwe_message_rejected": ErrorCode(
            400, "The message is not an EIP-4361 message for the identity's K4 wallet."
        ),
        "siwe_nonce_mismatch": ErrorCode(
            401, "The message's nonce is not the one issued for this sign-in."
        ),
        "siwe_not_yet_valid": ErrorCode(
            401, "``now`` is before ``Not Before``, or ``Issued At`` lies in the future."
        ),
        "siwe_pin_unset": ErrorCode(
            503, "The signer was started without the relying party K4 SIWE messages must name."
        ),
        "siwe_rejected": ErrorCode(
            401, "Branch: a well-formed SIWE message that fails verification (401)."
        ),
        "siwe_signature_invalid": ErrorCode(401, "The signature is malformed or does not recover."),
        "siwe_uri_mismatch": ErrorCode(
            401, "The message's URI is not the one this service expects."
        ),
        "stale_pop": ErrorCode(401, "The PoP timestamp is outside the freshness window."),
        "storage_denied": ErrorCode(
            403, "S3 refused the per-actor credentials (the bucket policy, not our code, said no)."
        ),
        "storage_failed": ErrorCode(
            502, "Any other S3 failure (the reason names the operation, key and error code)."
        ),
        "storage_unavailable": ErrorCode(
            503,
            (
                "S3 could not be reached (endpoint refused, connect or read timeout, connection "
                "closed)."
            ),
        ),
        "store_error": ErrorCode(500, "The state store failed."),
        "stored_envelope_invalid": ErrorCode(
            500, "The stored envelope does not open (truncated, unknown version, tampered)."
        ),
        "sts_exchange_failed": ErrorCode(
            502, "The STS endpoint refused or did not answer the web-identity exchange."
        ),
        "too_many_connections": ErrorCode(503, "The server holds its maximum of open connections."),
        "tpm_error": ErrorCode(500, "The TPM refused an operation."),
        "tpm_unavailable": ErrorCode(503, "No TPM reachable through the configured TCTI."),
        "unauthenticated": ErrorCode(
            401, "The route needs an authenticated caller (a role certificate) and there is none."
        ),
        "unknown_field": ErrorCode(400, "The JSON object has a field the endpoint does not know."),
        "unknown_role": ErrorCode(400, "The requested role is not one of agentkeys' roles."),
        "unknown_service": ErrorCode(404, "The path names no service of the policy."),
        "unsafe_tag_value": ErrorCode(
            400, "A session-tag value is not canonical hex (never substitute it into a policy)."
        ),
        "unseal_failed": ErrorCode(500, "A sealed secret cannot be recovered here."),
        "unsupported_media_type": ErrorCode(
            415, "A body was sent that is not ``application/json``."
        ),
        "upstream_failed": ErrorCode(
            502, "The upstream API could not be reached or broke the connection."
        ),
        "upstream_timeout": ErrorCode(504, "The upstream API did not answer in time."),
        "usage_error": ErrorCode(400, "A missing or inconsistent option (exit 2)."),
        "wallet_mismatch": ErrorCode(403, "The wallet given is not the operator's master wallet."),
        "worker_error": ErrorCode(500, "Base of the worker's errors."),
        "worker_unreachable": ErrorCode(503, "The worker did not answer."),
        "wrong_type": ErrorCode(400, "A JSON field has the wrong type or an out-of-range value."),
    }
)
"""Code → :class:`ErrorCode`, in code order."""


def status_of(code: str) -> int:
    """The status of ``code``; 500 for a code that is not registered (a server-side bug)."""
    entry = CODES.get(code)
    return 500 if entry is None else entry.status
