// Measures the gas and fees of every channel operation through real wallets (sandbox
// treasuries) and writes them to bench/results/ton_fees.json.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toNano } from '@ton/core';
import * as ch from '../lib/channel.mjs';
import {
  CLOSE_DELAY,
  balance,
  deployedChannel,
  feeRecord,
  promise,
  rejectedExternal,
  sendExternal,
} from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const OUTPUT = join(here, '..', '..', 'bench', 'results', 'ton_fees.json');
const fees = {};

const send = (wallet, env, body, value = toNano('0.05')) =>
  wallet.send({ to: env.address, value, body, bounce: true });

describe('fees of each operation', () => {
  it('measures the lifecycle with a payer-initiated close', async () => {
    const env = await deployedChannel();
    fees.deploy_and_top_up = feeRecord(env.deploy, env.address);
    fees.top_up = feeRecord(await send(env.payer, env, ch.topUpBody(), toNano('1')), env.address);
    const claim1 = ch.claimBody(toNano('1'), promise(env, toNano('1')));
    fees.claim_external = feeRecord(await sendExternal(env, claim1), env.address);
    const claim2 = ch.claimBody(toNano('2'), promise(env, toNano('2')));
    fees.claim_internal = feeRecord(await send(env.payee, env, claim2), env.address);

    const before = await balance(env);
    const replay = await rejectedExternal(env, claim2);
    assert.equal(replay, ch.ERR.STALE_PROMISE);
    assert.equal(await balance(env), before);
    fees.rejected_external = { gas: 0, channelTxFeesNanoton: '0', traceFeesNanoton: '0' };

    const closeSig = promise(env, 0n, { tag: ch.TAG.CLOSE });
    fees.start_close_external = feeRecord(await sendExternal(env, ch.closeBody(closeSig)), env.address);
    env.chain.now += CLOSE_DELAY;
    fees.withdraw_external = feeRecord(await sendExternal(env, ch.withdrawBody()), env.address);
  });

  it('measures the internal close and withdraw from the payer wallet', async () => {
    const env = await deployedChannel();
    fees.start_close_internal = feeRecord(await send(env.payer, env, ch.closeBody(Buffer.alloc(64))), env.address);
    env.chain.now += CLOSE_DELAY;
    fees.withdraw_internal = feeRecord(await send(env.payer, env, ch.withdrawBody()), env.address);
  });

  it('measures the cooperative close from the payee wallet', async () => {
    const env = await deployedChannel();
    const sig = promise(env, toNano('3'), { tag: ch.TAG.COOP_CLOSE });
    fees.cooperative_close = feeRecord(await send(env.payee, env, ch.coopCloseBody(toNano('3'), sig)), env.address);
    assert.ok(Object.values(fees).every((f) => f.gas <= 10000));
  });

  after(() => {
    const compiled = ch.compiled();
    const pkg = JSON.parse(readFileSync(join(here, '..', 'node_modules', '@ton', 'sandbox', 'package.json'), 'utf-8'));
    const report = {
      what: 'gas and fees (nanoton) of each payment-channel operation on the real TVM',
      emulator: `@ton/sandbox ${pkg.version}, its default mainnet-like config (400 nanoton per gas unit)`,
      contract: { tolkVersion: compiled.tolkVersion, codeHashHex: compiled.codeHashHex },
      fields: {
        gas: 'gas units of the channel transaction',
        channelTxFeesNanoton: 'total fees of the channel transaction',
        traceFeesNanoton: 'total fees of every transaction of the trace (wallet, channel, payout receivers)',
      },
      operations: fees,
    };
    mkdirSync(dirname(OUTPUT), { recursive: true });
    writeFileSync(OUTPUT, JSON.stringify(report, null, 2) + '\n');
  });
});
