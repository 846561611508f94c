// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// ERC-1271: how a contract wallet says a signature is its own.
interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4 magicValue);
}
