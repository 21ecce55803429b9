// Behaviour and attack tests of the payment channel on the real TVM (@ton/sandbox).
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { beginCell, toNano } from '@ton/core';
import * as ch from '../lib/channel.mjs';
import {
  CLOSE_DELAY,
  DEPOSIT,
  balance,
  channelTx,
  computeOf,
  deployedChannel,
  newKeys,
  promise,
  rejectedExternal,
  sendExternal,
  sendInternal,
  state,
  UNPAYABLE,
} from './helpers.mjs';

const GAS_PRICE = 400n; // nanoton per gas unit in the sandbox's mainnet-like config
const RESERVE = 10_000_000n;
const TOP_UP_GAS = 4000n;
const EXTERNAL_CLAIM_GAS = 6000n;

let env;
beforeEach(async () => {
  env = await deployedChannel();
});

function assertBounced(result, address, exitCode) {
  const tx = channelTx(result, address);
  assert.equal(computeOf(tx).exitCode, exitCode);
  assert.equal(tx.outMessagesCount, 1, 'the value must bounce back');
  assert.equal(tx.outMessages.get(0).info.bounced, true);
}

function payoutTo(result, dest) {
  const txs = result.transactions.filter((t) => t.inMessage?.info.dest?.equals?.(dest));
  return txs.reduce((sum, t) => sum + t.inMessage.info.value.coins, 0n);
}

describe('deploy and top-up', () => {
  it('deploys at the address derived from code and data, open and funded', async () => {
    const tx = channelTx(env.deploy, env.address);
    assert.equal(computeOf(tx).exitCode, 0);
    assert.ok(computeOf(tx).gasUsed <= TOP_UP_GAS);
    const st = await state(env);
    assert.equal(st.state, ch.STATE.OPEN);
    assert.equal(st.claimed, 0n);
    assert.equal(st.deposited, DEPOSIT - TOP_UP_GAS * GAS_PRICE - RESERVE);
    assert.equal(st.channelId, env.cfg.channelId);
    assert.equal(st.payerKey, BigInt('0x' + env.keys.publicKey.toString('hex')));
    assert.equal(st.closeDelay, BigInt(CLOSE_DELAY));
    assert.ok(st.payer.equals(env.payer.address));
    assert.ok(st.payee.equals(env.payee.address));
    assert.ok(st.balance >= st.deposited - st.claimed + RESERVE);
  });

  it('accepts top-ups from anyone, with an op, an empty body or a comment', async () => {
    const before = (await state(env)).deposited;
    const credit = toNano('1') - TOP_UP_GAS * GAS_PRICE;
    await sendInternal(env, env.stranger.address, ch.topUpBody(7n), toNano('1'));
    await sendInternal(env, env.payer.address, beginCell().endCell(), toNano('1'));
    const comment = beginCell().storeUint(0, 32).storeStringTail('top up').endCell();
    await sendInternal(env, env.payer.address, comment, toNano('1'));
    assert.equal((await state(env)).deposited, before + 3n * credit);
  });

  it('bounces unknown ops without crediting', async () => {
    const before = await state(env);
    const res = await sendInternal(env, env.stranger.address, beginCell().storeUint(0xdead, 32).endCell());
    assertBounced(res, env.address, ch.ERR.UNKNOWN_OP);
    assert.equal((await state(env)).deposited, before.deposited);
  });

  it('never lowers the deposit on a dust top-up', async () => {
    const before = (await state(env)).deposited;
    await sendInternal(env, env.stranger.address, ch.topUpBody(), 1n);
    assert.equal((await state(env)).deposited, before);
  });
});

describe('claims', () => {
  it('pays the difference on an external claim, the payee paying its gas', async () => {
    const before = await balance(env);
    const res = await sendExternal(env, ch.claimBody(toNano('1'), promise(env, toNano('1'))));
    const tx = channelTx(res, env.address);
    assert.equal(computeOf(tx).exitCode, 0);
    assert.ok(computeOf(tx).gasUsed <= EXTERNAL_CLAIM_GAS);
    const paid = payoutTo(res, env.payee.address);
    assert.ok(paid > toNano('1') - EXTERNAL_CLAIM_GAS * GAS_PRICE - toNano('0.001'));
    assert.ok(paid < toNano('1'));
    assert.ok(before - (await balance(env)) <= toNano('1'), 'the payer must not pay for the claim');
    const res2 = await sendExternal(env, ch.claimBody(toNano('3'), promise(env, toNano('3'))));
    assert.equal(computeOf(channelTx(res2, env.address)).exitCode, 0);
    assert.equal((await state(env)).claimed, toNano('3'));
  });

  it('pays the difference plus the attached value on an internal claim from anyone', async () => {
    const before = await balance(env);
    const body = ch.claimBody(toNano('2'), promise(env, toNano('2')));
    const res = await sendInternal(env, env.stranger.address, body, toNano('0.1'));
    assert.equal(computeOf(channelTx(res, env.address)).exitCode, 0);
    assert.ok(payoutTo(res, env.payee.address) > toNano('2.09'));
    assert.ok(before - (await balance(env)) <= toNano('2'));
    assert.equal((await state(env)).claimed, toNano('2'));
  });

  it('accepts a claim exactly at the deposit', async () => {
    const { deposited } = await state(env);
    await sendExternal(env, ch.claimBody(deposited, promise(env, deposited)));
    const st = await state(env);
    assert.equal(st.claimed, deposited);
    assert.ok(st.balance >= 0n);
  });

  const rejections = [
    ['a replayed promise', ch.ERR.STALE_PROMISE, async () => {
      const body = ch.claimBody(toNano('1'), promise(env, toNano('1')));
      await sendExternal(env, body);
      return body;
    }],
    ['a stale (lower) promise', ch.ERR.STALE_PROMISE, async () => {
      await sendExternal(env, ch.claimBody(toNano('2'), promise(env, toNano('2'))));
      return ch.claimBody(toNano('1'), promise(env, toNano('1')));
    }],
    ['a zero promise', ch.ERR.STALE_PROMISE, async () => ch.claimBody(0n, promise(env, 0n))],
    ['a promise for another channel id', ch.ERR.BAD_SIGNATURE, async () =>
      ch.claimBody(toNano('1'), promise(env, toNano('1'), { channelId: env.cfg.channelId + 1n }))],
    ['a promise for another channel address', ch.ERR.BAD_SIGNATURE, async () =>
      ch.claimBody(toNano('1'), promise(env, toNano('1'), { address: env.payee.address }))],
    ['a promise signed by another key', ch.ERR.BAD_SIGNATURE, async () =>
      ch.claimBody(toNano('1'), promise(env, toNano('1'), { secretKey: newKeys().secretKey }))],
    ['a cooperative-close signature used as a promise', ch.ERR.BAD_SIGNATURE, async () =>
      ch.claimBody(toNano('1'), promise(env, toNano('1'), { tag: ch.TAG.COOP_CLOSE }))],
    ['a signature for another amount', ch.ERR.BAD_SIGNATURE, async () =>
      ch.claimBody(toNano('2'), promise(env, toNano('1')))],
    ['a promise above the deposit', ch.ERR.ABOVE_DEPOSIT, async () => {
      const over = (await state(env)).deposited + 1n;
      return ch.claimBody(over, promise(env, over));
    }],
    ['a claim too small to pay its own gas', ch.ERR.CLAIM_TOO_SMALL, async () =>
      ch.claimBody(1000n, promise(env, 1000n))],
  ];

  for (const [name, exitCode, makeBody] of rejections) {
    it(`rejects ${name} before accepting, at no cost to the channel`, async () => {
      const body = await makeBody();
      const before = await balance(env);
      const claimed = (await state(env)).claimed;
      assert.equal(await rejectedExternal(env, body), exitCode);
      assert.equal(await balance(env), before);
      assert.equal((await state(env)).claimed, claimed);
    });
  }

  it('bounces the same bad claims sent as internal messages', async () => {
    const over = (await state(env)).deposited + 1n;
    const bad = await sendInternal(env, env.payee.address, ch.claimBody(over, promise(env, over)));
    assertBounced(bad, env.address, ch.ERR.ABOVE_DEPOSIT);
    const forged = ch.claimBody(toNano('1'), promise(env, toNano('1'), { secretKey: newKeys().secretKey }));
    assertBounced(await sendInternal(env, env.payee.address, forged), env.address, ch.ERR.BAD_SIGNATURE);
  });
});

describe('close and withdraw', () => {
  const closeSig = (secretKey) => promise(env, 0n, { tag: ch.TAG.CLOSE, secretKey });

  it('starts a close on a payer-signed external, then rejects a second close', async () => {
    const res = await sendExternal(env, ch.closeBody(closeSig()));
    assert.equal(computeOf(channelTx(res, env.address)).exitCode, 0);
    const st = await state(env);
    assert.equal(st.state, ch.STATE.CLOSING);
    assert.equal(st.closeDeadline, BigInt(env.chain.now + CLOSE_DELAY));
    const before = await balance(env);
    assert.equal(await rejectedExternal(env, ch.closeBody(closeSig())), ch.ERR.WRONG_STATE);
    assert.equal(await balance(env), before);
    const again = await sendInternal(env, env.payer.address, ch.closeBody(Buffer.alloc(64)));
    assertBounced(again, env.address, ch.ERR.WRONG_STATE);
  });

  it('rejects a close signed by another key or sent by a non-payer', async () => {
    assert.equal(await rejectedExternal(env, ch.closeBody(closeSig(newKeys().secretKey))), ch.ERR.BAD_SIGNATURE);
    const promiseSig = promise(env, 0n);
    assert.equal(await rejectedExternal(env, ch.closeBody(promiseSig)), ch.ERR.BAD_SIGNATURE);
    const res = await sendInternal(env, env.payee.address, ch.closeBody(Buffer.alloc(64)));
    assertBounced(res, env.address, ch.ERR.NOT_PAYER);
    assert.equal((await state(env)).state, ch.STATE.OPEN);
  });

  it('lets the payee claim during the delay, refuses early withdrawal, then refunds the payer', async () => {
    const close = await sendInternal(env, env.payer.address, ch.closeBody(Buffer.alloc(64)));
    assert.equal(computeOf(channelTx(close, env.address)).exitCode, 0);
    assert.equal(await rejectedExternal(env, ch.withdrawBody()), ch.ERR.TOO_EARLY);
    assertBounced(await sendInternal(env, env.payer.address, ch.withdrawBody()), env.address, ch.ERR.TOO_EARLY);
    await sendExternal(env, ch.claimBody(toNano('4'), promise(env, toNano('4'))));
    assert.equal((await state(env)).claimed, toNano('4'));

    env.chain.now += CLOSE_DELAY - 1;
    assert.equal(await rejectedExternal(env, ch.withdrawBody()), ch.ERR.TOO_EARLY);
    env.chain.now += 1;
    const { deposited, claimed } = await state(env);
    const res = await sendExternal(env, ch.withdrawBody());
    assert.ok(payoutTo(res, env.payer.address) >= deposited - claimed, 'the payer gets at least the unclaimed deposit');
    const st = await state(env);
    assert.equal(st.state, ch.STATE.CLOSED);
    assert.equal(await balance(env), 0n);

    const late = ch.claimBody(toNano('5'), promise(env, toNano('5')));
    for (const body of [late, ch.withdrawBody(), ch.closeBody(closeSig())]) {
      assert.equal(await rejectedExternal(env, body), UNPAYABLE, 'no balance, no gas credit');
    }
    assertBounced(await sendInternal(env, env.payee.address, late, toNano('1')), env.address, ch.ERR.WRONG_STATE);
    assertBounced(await sendInternal(env, env.payer.address, ch.withdrawBody()), env.address, ch.ERR.WRONG_STATE);
    const topUp = await sendInternal(env, env.payer.address, ch.topUpBody(), toNano('1'));
    assertBounced(topUp, env.address, ch.ERR.WRONG_STATE);
    assert.equal(await balance(env), 0n, 'a closed channel keeps nothing');
  });

  it('rejects withdrawal of an open channel', async () => {
    assert.equal(await rejectedExternal(env, ch.withdrawBody()), ch.ERR.WRONG_STATE);
  });
});

describe('promise key rotation', () => {
  it('the payer rotates; the retired key stays payable for the close delay, then not', async () => {
    const next = newKeys();
    await sendExternal(env, ch.claimBody(toNano('1'), promise(env, toNano('1'))));
    const signedBefore = promise(env, toNano('2'));
    const res = await sendInternal(env, env.payer.address, ch.rotateKeyBody(next.publicKey));
    assert.equal(computeOf(channelTx(res, env.address)).exitCode, 0);
    assert.equal((await state(env)).payerKey, BigInt('0x' + next.publicKey.toString('hex')));
    // a promise signed before the rotation is still claimed
    await sendExternal(env, ch.claimBody(toNano('2'), signedBefore));
    assert.equal((await state(env)).claimed, toNano('2'));
    // the new key signs from now on
    await sendExternal(env, ch.claimBody(toNano('3'), promise(env, toNano('3'), { secretKey: next.secretKey })));
    assert.equal((await state(env)).claimed, toNano('3'));
    // the retired key cannot close, and after the delay it cannot promise either
    const oldClose = promise(env, 0n, { tag: ch.TAG.CLOSE });
    assert.equal(await rejectedExternal(env, ch.closeBody(oldClose)), ch.ERR.BAD_SIGNATURE);
    env.chain.now += CLOSE_DELAY;
    const late = ch.claimBody(toNano('4'), promise(env, toNano('4')));
    assert.equal(await rejectedExternal(env, late), ch.ERR.BAD_SIGNATURE);
    assert.equal((await state(env)).claimed, toNano('3'));
  });

  it('only the payer rotates, one rotation per close delay, never on a closing channel', async () => {
    const next = newKeys();
    for (const from of [env.payee.address, env.stranger.address]) {
      assertBounced(await sendInternal(env, from, ch.rotateKeyBody(next.publicKey)), env.address, ch.ERR.NOT_PAYER);
    }
    assert.equal(await rejectedExternal(env, ch.rotateKeyBody(next.publicKey)), ch.ERR.UNKNOWN_OP);
    await sendInternal(env, env.payer.address, ch.rotateKeyBody(next.publicKey));
    // a second rotation while the retired key is still payable would void its promises
    const again = await sendInternal(env, env.payer.address, ch.rotateKeyBody(newKeys().publicKey));
    assertBounced(again, env.address, ch.ERR.TOO_EARLY);
    env.chain.now += CLOSE_DELAY;
    const third = newKeys();
    const ok = await sendInternal(env, env.payer.address, ch.rotateKeyBody(third.publicKey));
    assert.equal(computeOf(channelTx(ok, env.address)).exitCode, 0);
    await sendInternal(env, env.payer.address, ch.closeBody(Buffer.alloc(64)));
    const closing = await sendInternal(env, env.payer.address, ch.rotateKeyBody(newKeys().publicKey));
    assertBounced(closing, env.address, ch.ERR.WRONG_STATE);
  });
});

describe('cooperative close', () => {
  const coop = (cumulative, opts) => ch.coopCloseBody(cumulative, promise(env, cumulative, { tag: ch.TAG.COOP_CLOSE, ...opts }));

  it('pays the payee its final amount and the payer the rest at once', async () => {
    await sendExternal(env, ch.claimBody(toNano('1'), promise(env, toNano('1'))));
    const { deposited } = await state(env);
    const res = await sendInternal(env, env.payee.address, coop(toNano('3')));
    assert.equal(computeOf(channelTx(res, env.address)).exitCode, 0);
    assert.ok(payoutTo(res, env.payee.address) >= toNano('2'));
    assert.ok(payoutTo(res, env.payer.address) >= deposited - toNano('3'));
    assert.equal((await state(env)).state, ch.STATE.CLOSED);
    assert.equal((await state(env)).claimed, toNano('3'));
  });

  it('needs both the payee as sender and the payer signature with the close tag', async () => {
    assertBounced(await sendInternal(env, env.stranger.address, coop(toNano('1'))), env.address, ch.ERR.NOT_PAYEE);
    assertBounced(await sendInternal(env, env.payer.address, coop(toNano('1'))), env.address, ch.ERR.NOT_PAYEE);
    const asPromise = ch.coopCloseBody(toNano('1'), promise(env, toNano('1')));
    assertBounced(await sendInternal(env, env.payee.address, asPromise), env.address, ch.ERR.BAD_SIGNATURE);
    const forged = coop(toNano('1'), { secretKey: newKeys().secretKey });
    assertBounced(await sendInternal(env, env.payee.address, forged), env.address, ch.ERR.BAD_SIGNATURE);
    await sendExternal(env, ch.claimBody(toNano('2'), promise(env, toNano('2'))));
    assertBounced(await sendInternal(env, env.payee.address, coop(toNano('1'))), env.address, ch.ERR.STALE_PROMISE);
    assert.equal((await state(env)).state, ch.STATE.OPEN);
  });

  it('is not accepted as an external message', async () => {
    assert.equal(await rejectedExternal(env, coop(toNano('1'))), ch.ERR.UNKNOWN_OP);
  });
});

describe('gas draining with externals', () => {
  it('leaves the balance untouched after a flood of invalid externals', async () => {
    await sendExternal(env, ch.claimBody(toNano('1'), promise(env, toNano('1'))));
    const before = await balance(env);
    const bodies = [
      beginCell().endCell(),
      beginCell().storeUint(0xffffffff, 32).endCell(),
      ch.topUpBody(),
      ch.claimBody(toNano('1'), promise(env, toNano('1'))),
      ch.claimBody(toNano('2'), Buffer.alloc(64)),
      ch.claimBody(toNano('2'), promise(env, toNano('2'), { secretKey: newKeys().secretKey })),
      ch.claimBody(toNano('10000'), promise(env, toNano('10000'))),
      ch.closeBody(Buffer.alloc(64)),
      ch.withdrawBody(),
      beginCell().storeUint(ch.OP.CLAIM, 32).endCell(),
    ];
    for (let round = 0; round < 5; round += 1) {
      for (const body of bodies) {
        await rejectedExternal(env, body);
      }
    }
    assert.equal(await balance(env), before);
  });
});
