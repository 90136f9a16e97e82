// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {SidecarRegistry} from "./SidecarRegistry.sol";

/// @title ScopeContract: scope[operator_omni][agent_omni] = {services, read_only, updated_at}.
/// @notice SPEC.md section 6. Mutations need K10 + K11 of a master device of the operator with the
/// SCOPE_MGMT role; SidecarRegistry verifies them over a challenge whose target is this contract
/// and advances the operator's nonce and the passkey's sign count. Services are keccak256 of the
/// service name, given in strictly ascending order (canonical: no duplicates, one encoding).
/// The agent must be an agent of the operator: SidecarRegistry.agent_operator(agent) equals the
/// operator (recorded when an agent device was registered, the agent omni being derived on chain
/// from the operator), so no operator can grant scope over another operator's actor.
contract ScopeContract {
    bytes32 public constant OP_SET_SCOPE = keccak256("agentkeys.v1.set_scope");
    bytes32 public constant OP_REVOKE_SCOPE = keccak256("agentkeys.v1.revoke_scope");
    uint256 public constant MAX_SERVICES = 64;

    struct Entry {
        bytes32[] services;
        bool readOnly;
        uint64 updatedAt;
    }

    event ScopeSet(
        bytes32 indexed operatorOmni,
        bytes32 indexed agentOmni,
        bytes32[] services,
        bool readOnly,
        uint64 updatedAt,
        address sender
    );
    event ScopeRevoked(bytes32 indexed operatorOmni, bytes32 indexed agentOmni, address sender);

    error ServicesInvalid();
    error AgentIsOperator();
    error ScopeNotFound(bytes32 operatorOmni, bytes32 agentOmni);
    error AgentOfOtherOperator(bytes32 operatorOmni, bytes32 agentOmni);

    SidecarRegistry public immutable registry;
    mapping(bytes32 operatorOmni => mapping(bytes32 agentOmni => Entry)) private _scopes;

    constructor(SidecarRegistry registry_) {
        registry = registry_;
    }

    /// @notice Set (replace) the scope of an agent.
    /// @param k10Sig device_key_hash ‖ r ‖ s (96 bytes) by a master device of the operator.
    /// @param k11Assertion ABI-encoded WebAuthnAuth by that device's passkey.
    function set_scope_with_webauthn(
        bytes32 operator_omni,
        bytes32 agent_omni,
        bytes32[] calldata services,
        bool read_only,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        if (agent_omni == operator_omni) revert AgentIsOperator();
        if (services.length == 0 || services.length > MAX_SERVICES) revert ServicesInvalid();
        for (uint256 i = 1; i < services.length; ++i) {
            if (services[i - 1] >= services[i]) revert ServicesInvalid();
        }
        bytes32 paramsHash = keccak256(abi.encode(agent_omni, keccak256(abi.encodePacked(services)), read_only));
        registry.authorise_scope_mutation(OP_SET_SCOPE, operator_omni, paramsHash, k10Sig, k11Assertion);
        _checkAgentOf(operator_omni, agent_omni);
        Entry storage e = _scopes[operator_omni][agent_omni];
        e.services = services;
        e.readOnly = read_only;
        e.updatedAt = uint64(block.timestamp);
        emit ScopeSet(operator_omni, agent_omni, services, read_only, e.updatedAt, msg.sender);
    }

    /// @notice Remove the scope entry of an agent.
    function revoke_scope_with_webauthn(
        bytes32 operator_omni,
        bytes32 agent_omni,
        bytes calldata k10Sig,
        bytes calldata k11Assertion
    ) external {
        if (_scopes[operator_omni][agent_omni].updatedAt == 0) revert ScopeNotFound(operator_omni, agent_omni);
        registry.authorise_scope_mutation(
            OP_REVOKE_SCOPE, operator_omni, keccak256(abi.encode(agent_omni)), k10Sig, k11Assertion
        );
        _checkAgentOf(operator_omni, agent_omni);
        delete _scopes[operator_omni][agent_omni];
        emit ScopeRevoked(operator_omni, agent_omni, msg.sender);
    }

    /// @notice True when `service_hash` is in scope[operator][actor]. No entry: false (the master's
    /// own vault needs no entry; that rule belongs to the broker and worker).
    function is_service_in_scope(bytes32 operator_omni, bytes32 actor_omni, bytes32 service_hash)
        external
        view
        returns (bool)
    {
        bytes32[] storage services = _scopes[operator_omni][actor_omni].services;
        for (uint256 i = 0; i < services.length; ++i) {
            if (services[i] == service_hash) return true;
        }
        return false;
    }

    /// @notice The whole entry; updated_at == 0 means no entry.
    function get_scope(bytes32 operator_omni, bytes32 actor_omni)
        external
        view
        returns (bytes32[] memory services, bool read_only, uint64 updated_at)
    {
        Entry storage e = _scopes[operator_omni][actor_omni];
        return (e.services, e.readOnly, e.updatedAt);
    }

    function _checkAgentOf(bytes32 operator_omni, bytes32 agent_omni) private view {
        if (registry.agent_operator(agent_omni) != operator_omni) {
            revert AgentOfOtherOperator(operator_omni, agent_omni);
        }
    }
}
