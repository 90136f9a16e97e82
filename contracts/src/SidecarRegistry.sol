// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {P256} from "@openzeppelin/contracts/utils/cryptography/P256.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {DeviceAuth} from "./DeviceAuth.sol";

/// @title SidecarRegistry: devices (K10 keys, K11 passkeys) of each operator, and master wallets.
/// @notice SPEC.md sections 2, 3 and 6; byte layouts in docs/contracts.md.
///
/// A device entry is keyed by device_key_hash = keccak256(K10 X ‖ Y), computed here from the key.
/// The first master device of an operator is bound to the operator's master wallet: the operator
/// omni is recomputed from the wallet's lowercase hex address, the wallet is msg.sender or signs
/// EIP-712 typed data (relay), and the new K10 and K11 both sign a challenge that binds the wallet,
/// the chain id and this contract, so a copy submitted from the mempool under another wallet fails.
///
/// Every later master mutation (here, and scope changes in ScopeContract) carries a K10 signature
/// by a registered, non-revoked master device of the operator and a K11 assertion by that device's
/// passkey over a challenge this contract rebuilds:
///   keccak256(abi.encode(op_tag, block.chainid, target_contract, operator_omni, nonce, params_hash))
/// The per-operator nonce and every passkey's sign count live here and advance on success only.
///
/// Device management (adding a master or an agent device, revoking a device, rotating a K10 key
/// other than the authorising device's own) needs the RECOVERY role, and a device can never grant
/// a role it does not hold itself. Every agent omni derived here is recorded with its operator
/// (agent_operator), once and for good, so scope can only ever be granted to one's own agents.
contract SidecarRegistry is EIP712 {
    uint8 public constant TIER_MASTER = 1;
    uint8 public constant TIER_AGENT = 2;
    uint8 public constant ROLE_CAP_MINT = 1;
    uint8 public constant ROLE_RECOVERY = 2;
    uint8 public constant ROLE_SCOPE_MGMT = 4;
    uint8 private constant ROLES_ALL = 7;

    bytes32 public constant OP_REGISTER_FIRST_MASTER = keccak256("agentkeys.v1.register_first_master");
    bytes32 public constant OP_ADD_MASTER_DEVICE = keccak256("agentkeys.v1.add_master_device");
    bytes32 public constant OP_ADD_AGENT_DEVICE = keccak256("agentkeys.v1.add_agent_device");
    bytes32 public constant OP_REVOKE_DEVICE = keccak256("agentkeys.v1.revoke_device");
    bytes32 public constant OP_ROTATE_K10 = keccak256("agentkeys.v1.rotate_k10");

    bytes32 public constant K10_BINDING_TAG = keccak256("agentkeys.v1.k10_binding");

    bytes32 private constant FIRST_MASTER_TYPEHASH =
        keccak256("RegisterFirstMaster(bytes32 operatorOmni,bytes32 challenge)");

    /// @notice One device. K11 fields are zero for agent devices.
    struct Device {
        bytes32 operatorOmni;
        bytes32 actorOmni;
        uint8 tier;
        uint8 roles;
        bool revoked;
        uint32 signCount;
        uint64 registeredAt;
        bytes32 k10X;
        bytes32 k10Y;
        bytes32 k11CredentialIdHash;
        bytes32 k11X;
        bytes32 k11Y;
        bytes32 rpIdHash;
        bytes32 attestationDigest;
    }

    /// @notice A master device to register: K10 key, passkey, roles and an attestation digest.
    struct NewMaster {
        bytes32 k10X;
        bytes32 k10Y;
        bytes32 k11CredentialIdHash;
        bytes32 k11X;
        bytes32 k11Y;
        bytes32 rpIdHash;
        uint8 roles;
        bytes32 attestationDigest;
    }

    /// @notice An agent device; its actor omni is derived from the operator omni and the label.
    struct NewAgent {
        string label;
        bytes32 k10X;
        bytes32 k10Y;
        uint8 roles;
        bytes32 attestationDigest;
    }

    event MasterWalletBound(bytes32 indexed operatorOmni, address indexed wallet, address sender);
    event DeviceRegistered(
        bytes32 indexed operatorOmni,
        bytes32 indexed actorOmni,
        bytes32 indexed deviceKeyHash,
        uint8 tier,
        uint8 roles,
        address sender
    );
    event DeviceRevoked(
        bytes32 indexed operatorOmni, bytes32 indexed actorOmni, bytes32 indexed deviceKeyHash, address sender
    );
    event DeviceKeyRotated(
        bytes32 indexed operatorOmni,
        bytes32 indexed oldDeviceKeyHash,
        bytes32 indexed newDeviceKeyHash,
        address sender
    );
    event ScopeContractBound(address scopeContract, address sender);

    error OperatorAlreadyRegistered(bytes32 operatorOmni);
    error OperatorNotRegistered(bytes32 operatorOmni);
    error SenderIsNotWallet(address wallet, address sender);
    error WalletSignatureInvalid();
    error DeviceAlreadyRegistered(bytes32 deviceKeyHash);
    error DeviceNotFound(bytes32 deviceKeyHash);
    error DeviceNotAuthorised(bytes32 deviceKeyHash);
    error DeviceOfOtherOperator(bytes32 deviceKeyHash);
    error DeviceAlreadyRevoked(bytes32 deviceKeyHash);
    error InvalidRoles(uint8 roles);
    error InvalidLabel();
    error InvalidPublicKey();
    error K10ProofInvalid();
    error NotDeployer();
    error ScopeContractAlreadyBound();
    error NotScopeContract();
    error RolesNotHeld(uint8 roles, uint8 held);

    mapping(bytes32 deviceKeyHash => Device) private _devices;
    mapping(bytes32 operatorOmni => address) private _masterWallets;
    mapping(bytes32 operatorOmni => uint256) private _nonces;
    mapping(bytes32 agentOmni => bytes32 operatorOmni) private _agentOperators;
    address private immutable _deployer;
    address public scope_contract;

    constructor() EIP712("agentkeys.SidecarRegistry", "1") {
        _deployer = msg.sender;
    }

    // ------------------------------------------------------------------ deployment

    /// @notice Bind the ScopeContract once, by the deployer: the only contract that may ask this
    /// registry to authorise scope mutations (its address is part of their challenges).
    function bind_scope_contract(address scope) external {
        if (msg.sender != _deployer) revert NotDeployer();
        if (scope_contract != address(0)) revert ScopeContractAlreadyBound();
        scope_contract = scope;
        emit ScopeContractBound(scope, msg.sender);
    }

    // ------------------------------------------------------------------ reads

    /// @notice The device entry (registeredAt == 0 when unknown).
    function get_device(bytes32 deviceKeyHash) external view returns (Device memory) {
        return _devices[deviceKeyHash];
    }

    /// @notice The operator's master wallet (zero when the operator is not registered).
    function master_wallet(bytes32 operatorOmni) external view returns (address) {
        return _masterWallets[operatorOmni];
    }

    /// @notice The operator an agent omni was derived from by add_agent_device (zero when no agent
    /// device was ever registered under it). Set once, never changed: revocation and rotation keep it.
    function agent_operator(bytes32 agentOmni) external view returns (bytes32) {
        return _agentOperators[agentOmni];
    }

    /// @notice The operator's mutation nonce: part of the next challenge.
    function operator_nonce(bytes32 operatorOmni) external view returns (uint256) {
        return _nonces[operatorOmni];
    }

    /// @notice sha256("agentkeys" ‖ "evm" ‖ lowercase "0x…" hex of wallet) (SPEC.md section 3).
    function actor_omni_of_wallet(address wallet) public pure returns (bytes32) {
        return sha256(abi.encodePacked("agentkeys", "evm", Strings.toHexString(wallet)));
    }

    /// @notice sha256("agentkeys-hdkd-v1" ‖ operator_omni ‖ "//" ‖ label) (SPEC.md section 3).
    function agent_omni_of(bytes32 operatorOmni, string calldata label) public pure returns (bytes32) {
        _checkLabel(bytes(label));
        return sha256(abi.encodePacked("agentkeys-hdkd-v1", operatorOmni, "//", label));
    }

    /// @notice The challenge the next mutation `opTag` on `target` must sign.
    function master_challenge(bytes32 opTag, address target, bytes32 operatorOmni, bytes32 paramsHash)
        external
        view
        returns (bytes32)
    {
        return _challenge(opTag, target, operatorOmni, paramsHash);
    }

    /// @notice What a new K10 signs to consent to its binding (proof of possession):
    /// keccak256(abi.encode(K10_BINDING_TAG, chainid, this, operator, actor, X, Y)). Without it
    /// anyone could register someone else's public key first and squat its device_key_hash.
    function k10_binding(bytes32 operatorOmni, bytes32 actorOmni, bytes32 x, bytes32 y)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(K10_BINDING_TAG, block.chainid, address(this), operatorOmni, actorOmni, x, y));
    }

    /// @notice EIP-712 digest the wallet signs for a relayed first-master registration.
    function first_master_typed_digest(bytes32 operatorOmni, bytes32 challenge) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(FIRST_MASTER_TYPEHASH, operatorOmni, challenge)));
    }

    // ------------------------------------------------------------------ first master

    /// @notice Register the operator's first master device and bind its master wallet.
    /// @param wallet the master wallet; operator_omni = actor_omni_of_wallet(wallet).
    /// @param device the new master device.
    /// @param k10Sig r ‖ s (64 bytes) by the new K10 over the registration challenge.
    /// @param k11Assertion ABI-encoded WebAuthnAuth by the new passkey over the same challenge.
    /// @param walletSig empty when wallet == msg.sender (sovereign); else the wallet's EIP-712
    /// signature (65 bytes) over RegisterFirstMaster(operatorOmni, challenge) (relay).
    function register_first_master(
        address wallet,
        NewMaster calldata device,
        bytes calldata k10Sig,
        bytes calldata k11Assertion,
        bytes calldata walletSig
    ) external {
        bytes32 operatorOmni = actor_omni_of_wallet(wallet);
        if (_masterWallets[operatorOmni] != address(0)) revert OperatorAlreadyRegistered(operatorOmni);
        bytes32 deviceKeyHash = _newDeviceKeyHash(device.k10X, device.k10Y);
        _checkRoles(device.roles, ROLES_ALL);
        bytes32 challenge = _challenge(
            OP_REGISTER_FIRST_MASTER, address(this), operatorOmni, keccak256(abi.encode(wallet, device))
        );
        if (walletSig.length == 0) {
            if (msg.sender != wallet) revert SenderIsNotWallet(wallet, msg.sender);
        } else {
            (address signer, ECDSA.RecoverError err,) =
                ECDSA.tryRecover(first_master_typed_digest(operatorOmni, challenge), walletSig);
            if (err != ECDSA.RecoverError.NoError || signer != wallet) revert WalletSignatureInvalid();
        }
        if (k10Sig.length != 64) revert DeviceAuth.K10SignatureMalformed();
        DeviceAuth.verifyK10(challenge, bytes32(k10Sig[0:32]), bytes32(k10Sig[32:64]), device.k10X, device.k10Y);
        uint32 count = DeviceAuth.verifyK11(challenge, k11Assertion, device.rpIdHash, device.k11X, device.k11Y, 0);

        _masterWallets[operatorOmni] = wallet;
        _nonces[operatorOmni] += 1;
        _storeMaster(operatorOmni, deviceKeyHash, device, count);
        emit MasterWalletBound(operatorOmni, wallet, msg.sender);
    }

    // ------------------------------------------------------------------ master mutations

    /// @notice Register another master device of the operator (K10 + K11 of an existing master).
    /// @param newK10Proof r ‖ s by the new K10 over k10_binding(operator, operator, key).
    function add_master_device(
        bytes32 operatorOmni,
        NewMaster calldata device,
        bytes calldata newK10Proof,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        bytes32 deviceKeyHash = _newDeviceKeyHash(device.k10X, device.k10Y);
        _checkRoles(device.roles, ROLES_ALL);
        if (!P256.isValidPublicKey(device.k11X, device.k11Y)) revert InvalidPublicKey();
        _checkK10Binding(operatorOmni, operatorOmni, device.k10X, device.k10Y, newK10Proof);
        uint8 held = _authorise(
            OP_ADD_MASTER_DEVICE,
            address(this),
            operatorOmni,
            keccak256(abi.encode(device)),
            ROLE_RECOVERY,
            k10Sig,
            k11Assertion
        );
        _checkGrantable(device.roles, held);
        _storeMaster(operatorOmni, deviceKeyHash, device, 0);
    }

    /// @notice Register an agent device (tier agent, roles within CAP_MINT) for agent `label`.
    /// @param newK10Proof r ‖ s by the agent's K10 over k10_binding(operator, agent omni, key).
    function add_agent_device(
        bytes32 operatorOmni,
        NewAgent calldata agent,
        bytes calldata newK10Proof,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        bytes32 deviceKeyHash = _newDeviceKeyHash(agent.k10X, agent.k10Y);
        _checkRoles(agent.roles, ROLE_CAP_MINT);
        bytes32 actorOmni = agent_omni_of(operatorOmni, agent.label);
        _checkK10Binding(operatorOmni, actorOmni, agent.k10X, agent.k10Y, newK10Proof);
        bytes32 paramsHash = keccak256(
            abi.encode(keccak256(bytes(agent.label)), agent.k10X, agent.k10Y, agent.roles, agent.attestationDigest)
        );
        uint8 held =
            _authorise(OP_ADD_AGENT_DEVICE, address(this), operatorOmni, paramsHash, ROLE_RECOVERY, k10Sig, k11Assertion);
        _checkGrantable(agent.roles, held);
        // actorOmni is derived from operatorOmni, so an existing record can only hold the same value.
        _agentOperators[actorOmni] = operatorOmni;
        Device storage d = _devices[deviceKeyHash];
        d.operatorOmni = operatorOmni;
        d.actorOmni = actorOmni;
        d.tier = TIER_AGENT;
        d.roles = agent.roles;
        d.registeredAt = uint64(block.timestamp);
        d.k10X = agent.k10X;
        d.k10Y = agent.k10Y;
        d.attestationDigest = agent.attestationDigest;
        emit DeviceRegistered(operatorOmni, actorOmni, deviceKeyHash, TIER_AGENT, agent.roles, msg.sender);
    }

    /// @notice Revoke a device of the operator (master or agent). A master may revoke itself;
    /// revoking any other device needs the RECOVERY role.
    function revoke_device(
        bytes32 operatorOmni,
        bytes32 deviceKeyHash,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        Device storage d = _ownLiveDevice(operatorOmni, deviceKeyHash);
        uint8 required = DeviceAuth.k10Signer(k10Sig) == deviceKeyHash ? 0 : ROLE_RECOVERY;
        _authorise(
            OP_REVOKE_DEVICE,
            address(this),
            operatorOmni,
            keccak256(abi.encode(deviceKeyHash)),
            required,
            k10Sig,
            k11Assertion
        );
        d.revoked = true;
        emit DeviceRevoked(operatorOmni, d.actorOmni, deviceKeyHash, msg.sender);
    }

    /// @notice Move a device to a new K10 key: the entry is copied under the new key's hash and the
    /// old entry is revoked. Passkey, roles and sign count carry over. A master device may rotate
    /// its own key; rotating any other device needs the RECOVERY role.
    /// @param newK10Proof r ‖ s by the new K10 over k10_binding(operator, the entry's actor, key).
    function rotate_k10(
        bytes32 operatorOmni,
        bytes32 oldDeviceKeyHash,
        bytes32 newK10X,
        bytes32 newK10Y,
        bytes calldata newK10Proof,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        Device storage current = _ownLiveDevice(operatorOmni, oldDeviceKeyHash);
        bytes32 newDeviceKeyHash = _newDeviceKeyHash(newK10X, newK10Y);
        _checkK10Binding(operatorOmni, current.actorOmni, newK10X, newK10Y, newK10Proof);
        uint8 required = DeviceAuth.k10Signer(k10Sig) == oldDeviceKeyHash ? 0 : ROLE_RECOVERY;
        _authorise(
            OP_ROTATE_K10,
            address(this),
            operatorOmni,
            keccak256(abi.encode(oldDeviceKeyHash, newK10X, newK10Y)),
            required,
            k10Sig,
            k11Assertion
        );
        Device storage old = _devices[oldDeviceKeyHash];
        Device storage d = _devices[newDeviceKeyHash];
        d.operatorOmni = old.operatorOmni;
        d.actorOmni = old.actorOmni;
        d.tier = old.tier;
        d.roles = old.roles;
        d.signCount = old.signCount;
        d.registeredAt = uint64(block.timestamp);
        d.k10X = newK10X;
        d.k10Y = newK10Y;
        d.k11CredentialIdHash = old.k11CredentialIdHash;
        d.k11X = old.k11X;
        d.k11Y = old.k11Y;
        d.rpIdHash = old.rpIdHash;
        d.attestationDigest = old.attestationDigest;
        old.revoked = true;
        emit DeviceRevoked(operatorOmni, old.actorOmni, oldDeviceKeyHash, msg.sender);
        emit DeviceRegistered(operatorOmni, d.actorOmni, newDeviceKeyHash, d.tier, d.roles, msg.sender);
        emit DeviceKeyRotated(operatorOmni, oldDeviceKeyHash, newDeviceKeyHash, msg.sender);
    }

    /// @notice Authorise a scope mutation for the bound ScopeContract (the challenge's target is
    /// the ScopeContract; the device needs the SCOPE_MGMT role).
    function authorise_scope_mutation(
        bytes32 opTag,
        bytes32 operatorOmni,
        bytes32 paramsHash,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        if (msg.sender != scope_contract || msg.sender == address(0)) revert NotScopeContract();
        _authorise(opTag, msg.sender, operatorOmni, paramsHash, ROLE_SCOPE_MGMT, k10Sig, k11Assertion);
    }

    // ------------------------------------------------------------------ internals

    function _challenge(bytes32 opTag, address target, bytes32 operatorOmni, bytes32 paramsHash)
        private
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(opTag, block.chainid, target, operatorOmni, _nonces[operatorOmni], paramsHash));
    }

    /// @dev K10 of a live master device of the operator with `requiredRoles`, and K11 of its
    /// passkey, over the rebuilt challenge; then advance the sign count and the nonce. Returns the
    /// roles of the authorising device.
    function _authorise(
        bytes32 opTag,
        address target,
        bytes32 operatorOmni,
        bytes32 paramsHash,
        uint8 requiredRoles,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) private returns (uint8 held) {
        if (_masterWallets[operatorOmni] == address(0)) revert OperatorNotRegistered(operatorOmni);
        (bytes32 deviceKeyHash, bytes32 r, bytes32 s) = DeviceAuth.splitK10(k10Sig);
        Device storage d = _devices[deviceKeyHash];
        if (
            d.registeredAt == 0 || d.revoked || d.tier != TIER_MASTER || d.operatorOmni != operatorOmni
                || d.roles & requiredRoles != requiredRoles
        ) revert DeviceNotAuthorised(deviceKeyHash);
        bytes32 challenge = _challenge(opTag, target, operatorOmni, paramsHash);
        DeviceAuth.verifyK10(challenge, r, s, d.k10X, d.k10Y);
        d.signCount = DeviceAuth.verifyK11(challenge, k11Assertion, d.rpIdHash, d.k11X, d.k11Y, d.signCount);
        _nonces[operatorOmni] += 1;
        held = d.roles;
    }

    function _checkK10Binding(bytes32 operatorOmni, bytes32 actorOmni, bytes32 x, bytes32 y, bytes calldata proof)
        private
        view
    {
        if (proof.length != 64) revert K10ProofInvalid();
        if (!P256.verify(
                sha256(abi.encodePacked(k10_binding(operatorOmni, actorOmni, x, y))),
                bytes32(proof[0:32]),
                bytes32(proof[32:64]),
                x,
                y
            )) revert K10ProofInvalid();
    }

    function _storeMaster(bytes32 operatorOmni, bytes32 deviceKeyHash, NewMaster calldata m, uint32 count) private {
        Device storage d = _devices[deviceKeyHash];
        d.operatorOmni = operatorOmni;
        d.actorOmni = operatorOmni;
        d.tier = TIER_MASTER;
        d.roles = m.roles;
        d.signCount = count;
        d.registeredAt = uint64(block.timestamp);
        d.k10X = m.k10X;
        d.k10Y = m.k10Y;
        d.k11CredentialIdHash = m.k11CredentialIdHash;
        d.k11X = m.k11X;
        d.k11Y = m.k11Y;
        d.rpIdHash = m.rpIdHash;
        d.attestationDigest = m.attestationDigest;
        emit DeviceRegistered(operatorOmni, operatorOmni, deviceKeyHash, TIER_MASTER, m.roles, msg.sender);
    }

    function _ownLiveDevice(bytes32 operatorOmni, bytes32 deviceKeyHash) private view returns (Device storage d) {
        d = _devices[deviceKeyHash];
        if (d.registeredAt == 0) revert DeviceNotFound(deviceKeyHash);
        if (d.operatorOmni != operatorOmni) revert DeviceOfOtherOperator(deviceKeyHash);
        if (d.revoked) revert DeviceAlreadyRevoked(deviceKeyHash);
    }

    function _newDeviceKeyHash(bytes32 x, bytes32 y) private view returns (bytes32 deviceKeyHash) {
        if (!P256.isValidPublicKey(x, y)) revert InvalidPublicKey();
        deviceKeyHash = keccak256(abi.encodePacked(x, y));
        if (_devices[deviceKeyHash].registeredAt != 0) revert DeviceAlreadyRegistered(deviceKeyHash);
    }

    function _checkRoles(uint8 roles, uint8 allowed) private pure {
        if (roles == 0 || roles & ~allowed != 0) revert InvalidRoles(roles);
    }

    /// @dev A device grants only roles it holds itself (no escalation through a new device).
    function _checkGrantable(uint8 roles, uint8 held) private pure {
        if (roles & ~held != 0) revert RolesNotHeld(roles, held);
    }

    function _checkLabel(bytes memory label) private pure {
        if (label.length == 0 || label.length > 32) revert InvalidLabel();
        for (uint256 i = 0; i < label.length; ++i) {
            bytes1 c = label[i];
            if (!((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-")) revert InvalidLabel();
        }
    }
}
