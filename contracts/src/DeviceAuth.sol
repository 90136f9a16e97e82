// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {P256} from "@openzeppelin/contracts/utils/cryptography/P256.sol";
import {WebAuthn} from "@openzeppelin/contracts/utils/cryptography/WebAuthn.sol";

/// @title DeviceAuth: on-chain checks of K10 device signatures and K11 WebAuthn assertions.
/// @notice SPEC.md section 6. P-256 goes through OpenZeppelin's audited P256 library: the
/// EIP-7951/RIP-7212 precompile at 0x100 when the chain has it (presence is probed, an empty
/// return is never read as success) and its Solidity implementation otherwise. P256 rejects
/// r or s equal to 0 or >= n, s > n/2 (high-s, malleability) and keys that are off the curve.
/// OpenZeppelin's WebAuthn checks type "webauthn.get", the challenge, the UP/UV/BE/BS flags and
/// the signature; this library adds what it deliberately omits: the rpIdHash of the registered
/// passkey and WebAuthn's sign-count rule (0 -> 0 accepted, otherwise strictly increasing).
library DeviceAuth {
    /// @dev The K10 signature is not 96 bytes (device_key_hash ‖ r ‖ s).
    error K10SignatureMalformed();
    /// @dev The K10 signature does not verify (includes high-s, r/s out of range).
    error K10SignatureInvalid();
    /// @dev The K11 assertion is empty or not an ABI-encoded WebAuthnAuth.
    error K11AssertionMalformed();
    /// @dev The authenticator data names another relying party.
    error K11RpIdMismatch();
    /// @dev The authenticator's sign count did not increase.
    error K11SignCountNotIncreasing(uint32 stored, uint32 presented);
    /// @dev Type, challenge, flags or signature of the assertion are wrong.
    error K11AssertionInvalid();

    /// @notice Split a K10 signature argument: device_key_hash (32) ‖ r (32) ‖ s (32).
    function splitK10(bytes calldata k10Sig) internal pure returns (bytes32 device, bytes32 r, bytes32 s) {
        if (k10Sig.length != 96) revert K10SignatureMalformed();
        device = bytes32(k10Sig[0:32]);
        r = bytes32(k10Sig[32:64]);
        s = bytes32(k10Sig[64:96]);
    }

    /// @notice The device_key_hash a K10 signature argument names (its first 32 bytes).
    function k10Signer(bytes calldata k10Sig) internal pure returns (bytes32 device) {
        (device,,) = splitK10(k10Sig);
    }

    /// @notice Revert unless (r, s) is a low-s ES256 signature by (qx, qy) over the challenge:
    /// the signed message is the 32 challenge bytes, so the ECDSA digest is sha256(challenge).
    function verifyK10(bytes32 challenge, bytes32 r, bytes32 s, bytes32 qx, bytes32 qy) internal view {
        if (!P256.verify(sha256(abi.encodePacked(challenge)), r, s, qx, qy)) revert K10SignatureInvalid();
    }

    /// @notice Revert unless `assertion` is a WebAuthn assertion by the passkey (qx, qy) of relying
    /// party `rpIdHash` over `challenge` with UP and UV set and a sign count acceptable after
    /// `storedCount`. Returns the presented sign count, which the caller must store.
    function verifyK11(
        bytes32 challenge,
        bytes calldata assertion,
        bytes32 rpIdHash,
        bytes32 qx,
        bytes32 qy,
        uint32 storedCount
    ) internal view returns (uint32 presented) {
        (bool ok, WebAuthn.WebAuthnAuth calldata auth) = WebAuthn.tryDecodeAuth(assertion);
        if (!ok || auth.authenticatorData.length < 37) revert K11AssertionMalformed();
        bytes calldata authData = auth.authenticatorData;
        if (bytes32(authData[0:32]) != rpIdHash) revert K11RpIdMismatch();
        presented = uint32(bytes4(authData[33:37]));
        if ((presented != 0 || storedCount != 0) && presented <= storedCount) {
            revert K11SignCountNotIncreasing(storedCount, presented);
        }
        if (!WebAuthn.verify(abi.encodePacked(challenge), auth, qx, qy, true)) revert K11AssertionInvalid();
    }
}
