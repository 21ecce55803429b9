// Shared fixture for the contract tests: a sandbox chain with a deployed, funded channel.
import { randomBytes } from 'node:crypto';
import { Blockchain, internal } from '@ton/sandbox';
import { external, toNano } from '@ton/core';
import { keyPairFromSeed } from '@ton/crypto';
import * as ch from '../lib/channel.mjs';

export const CLOSE_DELAY = 3600;
export const DEPOSIT = toNano('10');

export async function deployedChannel() {
  const chain = await Blockchain.create();
  chain.now = 1_900_000_000;
  const payer = await chain.treasury('payer');
  const payee = await chain.treasury('payee');
  const stranger = await chain.treasury('stranger');
  const keys = keyPairFromSeed(randomBytes(32));
  const cfg = {
    payerKey: keys.publicKey,
    channelId: BigInt('0x' + randomBytes(16).toString('hex')),
    closeDelay: CLOSE_DELAY,
    payer: payer.address,
    payee: payee.address,
  };
  const address = ch.channelAddress(cfg);
  const deploy = await payer.send({
    to: address,
    value: DEPOSIT,
    body: ch.topUpBody(),
    init: ch.stateInit(cfg),
    bounce: false,
  });
  return { chain, payer, payee, stranger, keys, cfg, address, deploy };
}

export function channelTx(result, address) {
  const tx = result.transactions.find((t) => t.inMessage?.info.dest?.equals?.(address));
  if (!tx) throw new Error('no transaction on the channel');
  return tx;
}

export function computeOf(tx) {
  const phase = tx.description.computePhase;
  return phase.type === 'vm' ? phase : { exitCode: null, gasUsed: 0n, success: false };
}

export async function state(env) {
  const { stackReader } = await env.chain.runGetMethod(env.address, 'get_channel_state');
  return ch.readState(stackReader);
}

export async function balance(env) {
  return (await env.chain.getContract(env.address)).balance;
}

export function promise(env, cumulative, { tag = ch.TAG.PROMISE, channelId, address, secretKey } = {}) {
  const cell = ch.signedCell(tag, channelId ?? env.cfg.channelId, address ?? env.address, cumulative);
  return ch.signCell(cell, secretKey ?? env.keys.secretKey);
}

export function sendExternal(env, body) {
  return env.chain.sendMessage(external({ to: env.address, body }));
}

/** The rejection of an external that an account without balance cannot even import. */
export const UNPAYABLE = 'unpayable';

/** Sends an external that must be rejected; returns the exit code it was rejected with. */
export async function rejectedExternal(env, body) {
  try {
    await sendExternal(env, body);
  } catch (err) {
    if (err.message.includes('not accepted')) return err.exitCode;
    if (err.message.includes('cannot pay for importing')) return UNPAYABLE;
    throw err;
  }
  throw new Error('external message was accepted');
}

export function sendInternal(env, from, body, value = toNano('0.05')) {
  return env.chain.sendMessage(internal({ from, to: env.address, value, body, bounce: true }));
}

export function newKeys() {
  return keyPairFromSeed(randomBytes(32));
}

/** Sum of the total fees of every transaction in a trace, in nanoton. */
export function traceFees(result) {
  return result.transactions.reduce((sum, t) => sum + t.totalFees.coins, 0n);
}

export function feeRecord(result, address) {
  const tx = channelTx(result, address);
  return {
    gas: Number(computeOf(tx).gasUsed),
    channelTxFeesNanoton: tx.totalFees.coins.toString(),
    traceFeesNanoton: traceFees(result).toString(),
  };
}
