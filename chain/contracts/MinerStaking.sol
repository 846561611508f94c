// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "./IERC20.sol";

/// @title Miner stake, escrowed in a token (tUSD locally).
/// @notice A miner stakes from its own wallet; the router counts its active stake (stakeOf). Unstaking moves stake
/// to an unbonding balance that can be withdrawn once the unbonding delay has passed, so a miner cannot leave
/// with its stake between a fault and the slash. Slashers (the router's key) take stake for provable faults,
/// active stake first, then unbonding, never more than the miner holds; slashed tokens go to the treasury
/// (the owner). Each non-zero evidence hash is slashed at most once, so a resubmitted batch slashes nothing twice.
contract MinerStaking {
    struct Unbonding {
        uint256 amount;
        uint256 releaseAt;
    }

    IERC20 public immutable token;
    uint256 public immutable unbondingDelay;
    address public owner;
    uint256 public totalStaked;

    mapping(address => bool) public slashers;
    mapping(address => uint256) private _active;
    mapping(address => Unbonding) private _unbonding;
    mapping(bytes32 => bool) public evidenceUsed;

    event Staked(address indexed miner, uint256 amount);
    event UnstakeRequested(address indexed miner, uint256 amount, uint256 releaseAt);
    event Withdrawn(address indexed miner, uint256 amount);
    event Slashed(address indexed miner, uint256 amount, bytes32 indexed evidenceHash);
    event SlasherSet(address indexed account, bool allowed);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    modifier onlyOwner() {
        require(msg.sender == owner, "MinerStaking: caller is not the owner");
        _;
    }

    modifier onlySlasher() {
        require(slashers[msg.sender], "MinerStaking: caller is not a slasher");
        _;
    }

    constructor(IERC20 token_, uint256 unbondingDelaySeconds) {
        token = token_;
        unbondingDelay = unbondingDelaySeconds;
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    // ---- administration ----

    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "MinerStaking: new owner is the zero address");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function setSlasher(address account, bool allowed) external onlyOwner {
        slashers[account] = allowed;
        emit SlasherSet(account, allowed);
    }

    // ---- views ----

    /// Active stake: what the router counts for registration and stake-weighted aggregation.
    function stakeOf(address miner) external view returns (uint256) {
        return _active[miner];
    }

    function unbondingOf(address miner) external view returns (uint256 amount, uint256 releaseAt) {
        Unbonding memory u = _unbonding[miner];
        return (u.amount, u.releaseAt);
    }

    // ---- miners ----

    /// Needs an allowance of `amount` on the token first.
    function stake(uint256 amount) external {
        require(amount > 0, "MinerStaking: zero amount");
        _active[msg.sender] += amount;
        totalStaked += amount;
        require(token.transferFrom(msg.sender, address(this), amount), "MinerStaking: transfer failed");
        emit Staked(msg.sender, amount);
    }

    /// Moves `amount` of active stake to unbonding; the whole unbonding balance is released unbondingDelay seconds
    /// after the latest request.
    function requestUnstake(uint256 amount) external {
        require(amount > 0, "MinerStaking: zero amount");
        uint256 active = _active[msg.sender];
        require(active >= amount, "MinerStaking: amount exceeds stake");
        _active[msg.sender] = active - amount;
        Unbonding storage u = _unbonding[msg.sender];
        u.amount += amount;
        u.releaseAt = block.timestamp + unbondingDelay;
        emit UnstakeRequested(msg.sender, amount, u.releaseAt);
    }

    function withdraw() external {
        Unbonding memory u = _unbonding[msg.sender];
        require(u.amount > 0, "MinerStaking: nothing to withdraw");
        require(block.timestamp >= u.releaseAt, "MinerStaking: still unbonding");
        delete _unbonding[msg.sender];
        totalStaked -= u.amount;
        require(token.transfer(msg.sender, u.amount), "MinerStaking: transfer failed");
        emit Withdrawn(msg.sender, u.amount);
    }

    // ---- slashing ----

    /// Takes up to `amount` (active stake first, then unbonding) and returns what was taken. `evidenceHash` commits
    /// to the fault's evidence (kept by the router's ledger); a hash already slashed takes nothing.
    function slash(address miner, uint256 amount, bytes32 evidenceHash) external onlySlasher returns (uint256 taken) {
        taken = _slash(miner, amount, evidenceHash);
        if (taken > 0) require(token.transfer(owner, taken), "MinerStaking: transfer failed");
    }

    function slashBatch(address[] calldata miners, uint256[] calldata amounts, bytes32[] calldata evidenceHashes)
        external
        onlySlasher
        returns (uint256 total)
    {
        require(
            miners.length == amounts.length && miners.length == evidenceHashes.length, "MinerStaking: length mismatch"
        );
        for (uint256 i = 0; i < miners.length; i++) {
            total += _slash(miners[i], amounts[i], evidenceHashes[i]);
        }
        if (total > 0) require(token.transfer(owner, total), "MinerStaking: transfer failed");
    }

    function _slash(address miner, uint256 amount, bytes32 evidenceHash) private returns (uint256 taken) {
        if (evidenceHash != bytes32(0)) {
            if (evidenceUsed[evidenceHash]) return 0;
            evidenceUsed[evidenceHash] = true;
        }
        uint256 active = _active[miner];
        uint256 fromActive = amount < active ? amount : active;
        _active[miner] = active - fromActive;
        taken = fromActive;
        if (taken < amount) {
            Unbonding storage u = _unbonding[miner];
            uint256 rest = amount - taken;
            uint256 fromUnbonding = rest < u.amount ? rest : u.amount;
            u.amount -= fromUnbonding;
            taken += fromUnbonding;
        }
        totalStaked -= taken;
        emit Slashed(miner, taken, evidenceHash);
    }
}
