// The channel's wire format on the JS side: StateInit, signed cells and message bodies.
// The Python package mirrors this module (cocoon/ton/channel.py); golden vectors pin both.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beginCell, Cell, contractAddress } from '@ton/core';
import { sign } from '@ton/crypto';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export const OP = {
  TOP_UP: 0x544f5055,
  CLAIM: 0x434c4149,
  CLOSE: 0x434c4f53,
  WITHDRAW: 0x57445257,
  COOP_CLOSE: 0x434f4f50,
  ROTATE_KEY: 0x524b4559,
};
export const TAG = { PROMISE: 0x50524f4d, CLOSE: 0x434c5347, COOP_CLOSE: 0x434f4f53 };
export const STATE = { OPEN: 0, CLOSING: 1, CLOSED: 2 };
export const ERR = {
  WRONG_STATE: 101,
  BAD_SIGNATURE: 102,
  STALE_PROMISE: 103,
  ABOVE_DEPOSIT: 104,
  NOT_PAYER: 105,
  NOT_PAYEE: 106,
  TOO_EARLY: 107,
  CLAIM_TOO_SMALL: 108,
  INSUFFICIENT_BALANCE: 109,
  UNKNOWN_OP: 0xffff,
};

export function compiled() {
  return JSON.parse(readFileSync(join(root, 'build', 'payment_channel.compiled.json'), 'utf-8'));
}

export function code() {
  return Cell.fromBase64(compiled().codeBoc64);
}

/** Initial data: what the address commits to. `cfg.payerKey` is the 32-byte ed25519 key. */
export function dataCell(cfg) {
  const parties = beginCell()
    .storeAddress(cfg.payer)
    .storeAddress(cfg.payee)
    .storeMaybeRef(null) // no retired key yet
    .endCell();
  return beginCell()
    .storeBuffer(cfg.payerKey, 32)
    .storeUint(cfg.channelId, 128)
    .storeUint(cfg.closeDelay, 64)
    .storeUint(STATE.OPEN, 8)
    .storeUint(0, 64)
    .storeCoins(0)
    .storeCoins(0)
    .storeRef(parties)
    .endCell();
}

export function stateInit(cfg) {
  return { code: code(), data: dataCell(cfg) };
}

export function channelAddress(cfg, workchain = 0) {
  return contractAddress(workchain, stateInit(cfg));
}

/** The cell the payer signs (ed25519 over its hash); binds tag, channel id and address. */
export function signedCell(tag, channelId, channel, cumulative) {
  return beginCell()
    .storeUint(tag, 32)
    .storeUint(channelId, 128)
    .storeAddress(channel)
    .storeCoins(cumulative)
    .endCell();
}

export function signCell(cell, secretKey) {
  return sign(cell.hash(), secretKey);
}

export function topUpBody(queryId = 0n) {
  return beginCell().storeUint(OP.TOP_UP, 32).storeUint(queryId, 64).endCell();
}

export function claimBody(cumulative, signature, queryId = 0n) {
  return beginCell()
    .storeUint(OP.CLAIM, 32)
    .storeUint(queryId, 64)
    .storeCoins(cumulative)
    .storeBuffer(signature, 64)
    .endCell();
}

export function closeBody(signature, queryId = 0n) {
  return beginCell()
    .storeUint(OP.CLOSE, 32)
    .storeUint(queryId, 64)
    .storeBuffer(signature, 64)
    .endCell();
}

export function withdrawBody(queryId = 0n) {
  return beginCell().storeUint(OP.WITHDRAW, 32).storeUint(queryId, 64).endCell();
}

export function coopCloseBody(cumulative, signature, queryId = 0n) {
  return beginCell()
    .storeUint(OP.COOP_CLOSE, 32)
    .storeUint(queryId, 64)
    .storeCoins(cumulative)
    .storeBuffer(signature, 64)
    .endCell();
}

/** The payer wallet's internal message that makes `newKey` (32 bytes) the promise key. */
export function rotateKeyBody(newKey, queryId = 0n) {
  return beginCell()
    .storeUint(OP.ROTATE_KEY, 32)
    .storeUint(queryId, 64)
    .storeBuffer(newKey, 32)
    .endCell();
}

/** Reads `get_channel_state` (same order as the contract's ChannelState). */
export function readState(reader) {
  return {
    state: reader.readNumber(),
    closeDeadline: reader.readBigNumber(),
    deposited: reader.readBigNumber(),
    claimed: reader.readBigNumber(),
    balance: reader.readBigNumber(),
    channelId: reader.readBigNumber(),
    payerKey: reader.readBigNumber(),
    closeDelay: reader.readBigNumber(),
    payer: reader.readAddress(),
    payee: reader.readAddress(),
  };
}
