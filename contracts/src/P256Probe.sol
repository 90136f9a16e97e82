// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {P256} from "@openzeppelin/contracts/utils/cryptography/P256.sol";

/// @title P256Probe: exposes the P-256 paths the contracts use, for test vectors and gas tables.
/// @notice Not part of a production deployment; holds no state.
contract P256Probe {
    /// @notice The path the contracts take: precompile when present, Solidity otherwise.
    function verify(bytes32 h, bytes32 r, bytes32 s, bytes32 qx, bytes32 qy) external view returns (bool) {
        return P256.verify(h, r, s, qx, qy);
    }

    /// @notice The Solidity implementation only (the fallback), whatever the chain offers.
    function verify_solidity(bytes32 h, bytes32 r, bytes32 s, bytes32 qx, bytes32 qy)
        external
        view
        returns (bool)
    {
        return P256.verifySolidity(h, r, s, qx, qy);
    }

    /// @notice True when the 0x100 precompile answers (a 32-byte output for a known-good vector).
    function has_precompile() external view returns (bool) {
        (bool ok, bytes memory out) = address(0x100).staticcall(
            abi.encode(
                bytes32(0xbb5a52f42f9c9261ed4361f59422a1e30036e7c32b270c8807a419feca605023),
                bytes32(uint256(5)),
                bytes32(uint256(1)),
                bytes32(0xa71af64de5126a4a4e02b7922d66ce9415ce88a4c9d25514d91082c8725ac957),
                bytes32(0x5d47723c8fbe580bb369fec9c2665d8e30a435b9932645482e7c9f11e872296b)
            )
        );
        return ok && out.length == 32 && uint256(bytes32(out)) == 1;
    }
}
