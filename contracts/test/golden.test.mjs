// Golden vectors shared with the Python package: fixed, public test inputs (never a real key)
// and the cells, hashes and signatures the JS side derives from them. The Python tests assert
// byte equality; this test keeps the committed file in step and proves the vectors run on the
// real contract. UPDATE_GOLDEN=1 rewrites the file after an intended format change.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Address, beginCell, contractAddress, storeStateInit, toNano } from '@ton/core';
import { keyPairFromSeed } from '@ton/crypto';
import { Blockchain, internal } from '@ton/sandbox';
import * as ch from '../lib/channel.mjs';
import { sendExternal } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const GOLDEN = join(here, '..', '..', 'tests', 'data', 'ton', 'golden_vectors.json');

function vectors() {
  const seed = createHash('sha256').update('cocoon ton golden vectors v1 (public test seed)').digest();
  const keys = keyPairFromSeed(seed);
  const cfg = {
    payerKey: keys.publicKey,
    channelId: 0x0123456789abcdef0123456789abcdefn,
    closeDelay: 86400,
    payer: Address.parse('0:' + '11'.repeat(32)),
    payee: Address.parse('0:' + '22'.repeat(32)),
  };
  const address = ch.channelAddress(cfg);
  const init = ch.stateInit(cfg);
  const signed = (tag, cumulative) => {
    const cell = ch.signedCell(tag, cfg.channelId, address, cumulative);
    return { cell, signature: ch.signCell(cell, keys.secretKey) };
  };
  const promises = [1n, 1_000_000_000n, 123_456_789_012n].map((cumulative) => {
    const { cell, signature } = signed(ch.TAG.PROMISE, cumulative);
    return {
      cumulative: cumulative.toString(),
      cellHashHex: cell.hash().toString('hex'),
      signatureHex: signature.toString('hex'),
      claimBodyHashHex: ch.claimBody(cumulative, signature, 5n).hash().toString('hex'),
    };
  });
  const close = signed(ch.TAG.CLOSE, 0n);
  const coop = signed(ch.TAG.COOP_CLOSE, 2_000_000_000n);
  return {
    seedHex: seed.toString('hex'),
    publicKeyHex: keys.publicKey.toString('hex'),
    channelId: cfg.channelId.toString(),
    closeDelay: cfg.closeDelay,
    payer: cfg.payer.toRawString(),
    payee: cfg.payee.toRawString(),
    codeHashHex: init.code.hash().toString('hex'),
    dataHashHex: init.data.hash().toString('hex'),
    stateInitHashHex: beginCell().store(storeStateInit(init)).endCell().hash().toString('hex'),
    address: address.toRawString(),
    queryId: '5',
    promises,
    close: {
      cellHashHex: close.cell.hash().toString('hex'),
      signatureHex: close.signature.toString('hex'),
      bodyHashHex: ch.closeBody(close.signature, 5n).hash().toString('hex'),
    },
    coopClose: {
      cumulative: '2000000000',
      cellHashHex: coop.cell.hash().toString('hex'),
      signatureHex: coop.signature.toString('hex'),
      bodyHashHex: ch.coopCloseBody(2_000_000_000n, coop.signature, 5n).hash().toString('hex'),
    },
    topUpBodyHashHex: ch.topUpBody(5n).hash().toString('hex'),
    withdrawBodyHashHex: ch.withdrawBody(5n).hash().toString('hex'),
    _cfg: cfg,
    _init: init,
  };
}

it('the committed golden vectors match what the JS side derives', () => {
  const { _cfg, _init, ...fresh } = vectors();
  assert.equal(contractAddress(0, _init).toRawString(), fresh.address);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(dirname(GOLDEN), { recursive: true });
    writeFileSync(GOLDEN, JSON.stringify(fresh, null, 2) + '\n');
  }
  assert.deepEqual(JSON.parse(readFileSync(GOLDEN, 'utf-8')), fresh, 'run UPDATE_GOLDEN=1 npm test');
});

it('the golden claim is accepted by the real contract', async () => {
  const v = vectors();
  const chain = await Blockchain.create();
  const address = Address.parse(v.address);
  await chain.sendMessage(internal({ from: v._cfg.payer, to: address, value: toNano('5'), stateInit: v._init, body: ch.topUpBody() }));
  const p = v.promises[1];
  const body = ch.claimBody(BigInt(p.cumulative), Buffer.from(p.signatureHex, 'hex'), 5n);
  assert.equal(body.hash().toString('hex'), p.claimBodyHashHex);
  await sendExternal({ chain, address }, body);
  const { stackReader } = await chain.runGetMethod(address, 'get_channel_state');
  assert.equal(ch.readState(stackReader).claimed, BigInt(p.cumulative));
  const hash = await chain.runGetMethod(address, 'get_promise_hash', [{ type: 'int', value: BigInt(p.cumulative) }]);
  assert.equal(hash.stackReader.readBigNumber().toString(16).padStart(64, '0'), p.cellHashHex);
});
