// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title K3EpochCounter: the global K3 epoch, advanced by M-of-N signer governance.
/// @notice SPEC.md section 6. The epoch starts at 1. Advancing it is one transaction carrying at
/// least `threshold` EIP-712 approvals by distinct governance members, ordered by ascending signer
/// address; changing the governance set takes the same. Both bind a governance nonce, so a set
/// change voids approvals collected before it.
contract K3EpochCounter is EIP712 {
    uint256 public constant MAX_MEMBERS = 32;
    bytes32 private constant ADVANCE_TYPEHASH = keccak256("AdvanceEpoch(uint64 newEpoch,uint256 nonce)");
    bytes32 private constant GOVERNANCE_TYPEHASH =
        keccak256("SetGovernance(address[] members,uint8 threshold,uint256 nonce)");

    event EpochAdvanced(uint64 indexed epoch, address sender);
    event GovernanceChanged(address[] members, uint8 threshold, address sender);

    error GovernanceInvalid();
    error EpochNotNext(uint64 current, uint64 proposed);
    error NotEnoughApprovals(uint256 valid, uint8 threshold);

    uint64 public current_epoch;
    uint256 public governance_nonce;
    uint8 public threshold;
    address[] private _members;
    mapping(address => bool) private _isMember;

    constructor(address[] memory members, uint8 threshold_) EIP712("agentkeys.K3EpochCounter", "1") {
        current_epoch = 1;
        _setGovernance(members, threshold_);
    }

    function governance_members() external view returns (address[] memory) {
        return _members;
    }

    function advance_digest(uint64 newEpoch) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ADVANCE_TYPEHASH, newEpoch, governance_nonce)));
    }

    function governance_digest(address[] calldata members, uint8 threshold_) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(GOVERNANCE_TYPEHASH, keccak256(abi.encodePacked(members)), threshold_, governance_nonce))
        );
    }

    /// @notice Advance to `newEpoch` (must be current + 1) with M-of-N approvals.
    function advance(uint64 newEpoch, bytes[] calldata approvals) external {
        if (newEpoch != current_epoch + 1) revert EpochNotNext(current_epoch, newEpoch);
        _checkApprovals(advance_digest(newEpoch), approvals);
        current_epoch = newEpoch;
        governance_nonce += 1;
        emit EpochAdvanced(newEpoch, msg.sender);
    }

    /// @notice Replace the governance set and threshold with M-of-N approvals of the current set.
    function set_governance(address[] calldata members, uint8 threshold_, bytes[] calldata approvals) external {
        _checkApprovals(governance_digest(members, threshold_), approvals);
        governance_nonce += 1;
        _setGovernance(members, threshold_);
    }

    function _checkApprovals(bytes32 digest, bytes[] calldata approvals) private view {
        uint256 valid = 0;
        address previous = address(0);
        for (uint256 i = 0; i < approvals.length; ++i) {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, approvals[i]);
            if (err != ECDSA.RecoverError.NoError || !_isMember[signer] || signer <= previous) {
                revert NotEnoughApprovals(valid, threshold);
            }
            previous = signer;
            valid += 1;
        }
        if (valid < threshold) revert NotEnoughApprovals(valid, threshold);
    }

    function _setGovernance(address[] memory members, uint8 threshold_) private {
        if (members.length == 0 || members.length > MAX_MEMBERS || threshold_ == 0 || threshold_ > members.length) {
            revert GovernanceInvalid();
        }
        for (uint256 i = 0; i < _members.length; ++i) {
            _isMember[_members[i]] = false;
        }
        address previous = address(0);
        for (uint256 i = 0; i < members.length; ++i) {
            if (members[i] <= previous) revert GovernanceInvalid();
            previous = members[i];
            _isMember[members[i]] = true;
        }
        _members = members;
        threshold = threshold_;
        emit GovernanceChanged(members, threshold_, msg.sender);
    }
}
