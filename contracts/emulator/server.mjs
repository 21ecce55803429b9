// A local TON chain for development and tests: @ton/sandbox (the real TVM) behind the subset
// of the toncenter v2 HTTP API that cocoon uses, so one Python adapter talks to both this and
// real toncenter. Test-only endpoints live under /emulator/ (faucet, time travel, snapshots).
//
//   node emulator/server.mjs [--host 127.0.0.1] [--port 0] [--state FILE]
// Prints `listening on http://HOST:PORT` once ready. With --state, the chain (accounts,
// transactions, clock) is loaded from FILE when it exists and written there on SIGTERM/SIGINT,
// so a stopped emulator comes back as the same chain, as a real one does after an outage.
// (Snapshots taken with /emulator/snapshot live in memory only.)
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Address, Cell, beginCell, loadMessage, storeMessage, toNano } from '@ton/core';
import { Blockchain, snapshotFromSerializable, snapshotToSerializable } from '@ton/sandbox';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const host = args.host ?? '127.0.0.1';
const port = Number(args.port ?? 0);
const statePath = args.state;

const chain = await Blockchain.create();
let offset = 0; // seconds travelled ahead of the wall clock
let blockSeqno = 1;
if (statePath && existsSync(statePath)) {
  const saved = JSON.parse(readFileSync(statePath, 'utf-8'));
  await chain.loadFrom(snapshotFromSerializable(saved.chain));
  offset = saved.offset;
  blockSeqno = saved.blockSeqno;
}
const clock = () => Math.floor(Date.now() / 1000) + offset;
const faucet = await chain.treasury('faucet', { balance: toNano('1000000000'), resetBalanceIfZero: true });
const snapshots = new Map();

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const b64 = (cell) => cell.toBoc().toString('base64');
const cellFrom = (text) => Cell.fromBase64(text);
const friendly = (addr) => (addr ? addr.toString({ urlSafe: true, bounceable: true }) : '');

function parseAddress(text) {
  try {
    return Address.parse(String(text));
  } catch {
    throw new HttpError(400, `invalid address: ${text}`);
  }
}

function stackOut(item) {
  switch (item.type) {
    case 'int':
      return ['num', (item.value < 0n ? '-0x' + (-item.value).toString(16) : '0x' + item.value.toString(16))];
    case 'cell':
    case 'slice':
    case 'builder':
      return ['cell', { bytes: b64(item.cell), object: {} }];
    case 'null':
      return ['null', null];
    case 'tuple':
      return ['tuple', { elements: item.items.map(stackOut) }];
    default:
      throw new HttpError(500, `unsupported stack entry ${item.type}`);
  }
}

function stackIn([kind, value]) {
  if (['num', 'number', 'int'].includes(kind)) return { type: 'int', value: BigInt(value) };
  if (['cell', 'tvm.Cell'].includes(kind)) return { type: 'cell', cell: cellFrom(value) };
  if (['slice', 'tvm.Slice'].includes(kind)) return { type: 'slice', cell: cellFrom(value) };
  throw new HttpError(400, `unsupported stack entry ${kind}`);
}

function messageJson(msg) {
  if (!msg) return null;
  const info = msg.info;
  return {
    '@type': 'raw.message',
    source: info.type === 'internal' ? friendly(info.src) : '',
    destination: info.type === 'external-out' ? '' : friendly(info.dest),
    value: info.type === 'internal' ? info.value.coins.toString() : '0',
    fwd_fee: info.type === 'internal' ? info.forwardFee.toString() : '0',
    ihr_fee: '0',
    created_lt: info.type === 'external-in' ? '0' : info.createdLt.toString(),
    body_hash: msg.body.hash().toString('base64'),
    msg_data: { '@type': 'msg.dataRaw', body: b64(msg.body), init_state: msg.init ? b64(beginCell().store(storeMessage(msg)).endCell()) : '' },
    message: '',
  };
}

// An account's transactions newest first, from the one named by lt and hash when given, as
// toncenter's getTransactions answers. Not the sandbox's own getTransactions: 0.41 reverses its
// transaction list in place on every call (so pages come out of order) and compares hashes by
// identity (so no lt/hash cursor is ever found).
function history(address, q) {
  let txs = chain.transactions
    .filter((tx) => Address.isAddress(tx.inMessage?.info?.dest) && tx.inMessage.info.dest.equals(address))
    .sort((a, b) => (a.lt < b.lt ? 1 : a.lt > b.lt ? -1 : 0));
  if (q.lt && q.hash) {
    const hash = Buffer.from(q.hash, /^[0-9a-fA-F]{64}$/.test(q.hash) ? 'hex' : 'base64');
    const from = txs.findIndex((tx) => tx.lt === BigInt(q.lt) && tx.hash().equals(hash));
    if (from < 0) throw new HttpError(404, 'Transaction with provided lt and hash not found.');
    txs = txs.slice(from);
  }
  const toLt = BigInt(q.to_lt ?? 0);
  return txs.filter((tx) => tx.lt > toLt).slice(0, Number(q.limit ?? 10)).map(transactionJson);
}

function transactionJson(tx) {
  return {
    '@type': 'raw.transaction',
    utime: tx.now,
    data: b64(tx.raw),
    transaction_id: { '@type': 'internal.transactionId', lt: tx.lt.toString(), hash: tx.hash().toString('base64') },
    fee: tx.totalFees.coins.toString(),
    storage_fee: (tx.description.storagePhase?.storageFeesCollected ?? 0n).toString(),
    other_fee: (tx.totalFees.coins - (tx.description.storagePhase?.storageFeesCollected ?? 0n)).toString(),
    in_msg: messageJson(tx.inMessage),
    out_msgs: [...tx.outMessages.values()].map(messageJson),
  };
}

async function accountInfo(address) {
  const contract = await chain.getContract(address);
  const state = contract.accountState;
  const status = !state ? 'uninitialized' : state.type === 'active' ? 'active' : state.type === 'frozen' ? 'frozen' : 'uninitialized';
  const active = state?.type === 'active' ? state.state : null;
  return {
    '@type': 'raw.fullAccountState',
    balance: contract.balance.toString(),
    code: active?.code ? b64(active.code) : '',
    data: active?.data ? b64(active.data) : '',
    last_transaction_id: {
      '@type': 'internal.transactionId',
      lt: contract.lastTransactionLt.toString(),
      hash: Buffer.from(contract.lastTransactionHash.toString(16).padStart(64, '0'), 'hex').toString('base64'),
    },
    frozen_hash: '',
    sync_utime: clock(),
    state: status,
  };
}

async function send(message) {
  chain.now = clock();
  blockSeqno += 1;
  try {
    return await chain.sendMessage(message);
  } catch (err) {
    const exit = err.exitCode === undefined ? '' : ` exitcode=${err.exitCode}`;
    const reason = err.message.includes('not accepted') || err.message.includes('cannot pay for importing')
      ? 'External message was not accepted' : err.message.split('\n')[0];
    throw new HttpError(500, `LITE_SERVER_UNKNOWN: cannot apply external message to current state : ${reason}${exit}`);
  }
}

const routes = {
  'GET /api/v2/getAddressInformation': async (q) => accountInfo(parseAddress(q.address)),
  'GET /api/v2/getAddressBalance': async (q) => (await chain.getContract(parseAddress(q.address))).balance.toString(),
  'GET /api/v2/getMasterchainInfo': async () => ({
    '@type': 'blocks.masterchainInfo',
    last: { '@type': 'ton.blockIdExt', workchain: -1, shard: '-9223372036854775808', seqno: blockSeqno, root_hash: '', file_hash: '' },
  }),
  'GET /api/v2/getBlockHeader': async (q) => ({
    '@type': 'blocks.header',
    id: { '@type': 'ton.blockIdExt', workchain: Number(q.workchain), shard: q.shard, seqno: Number(q.seqno) },
    gen_utime: clock(),
  }),
  'POST /api/v2/runGetMethod': async (_q, body) => {
    const address = parseAddress(body.address);
    const contract = await chain.getContract(address);
    if (contract.accountState?.type !== 'active') {
      return { '@type': 'smc.runResult', gas_used: 0, exit_code: -13, stack: [] };
    }
    const method = /^-?\d+$/.test(String(body.method)) ? Number(body.method) : String(body.method);
    const result = await contract.get(method, (body.stack ?? []).map(stackIn), { now: clock() }).catch((err) => err);
    return { '@type': 'smc.runResult', gas_used: Number(result.gasUsed ?? 0), exit_code: result.exitCode ?? 0, stack: (result.stack ?? []).map(stackOut) };
  },
  'POST /api/v2/sendBoc': async (_q, body) => {
    await send(loadMessage(cellFrom(body.boc).beginParse()));
    return { '@type': 'ok' };
  },
  'POST /api/v2/sendBocReturnHash': async (_q, body) => {
    const cell = cellFrom(body.boc);
    await send(loadMessage(cell.beginParse()));
    return { '@type': 'raw.extMessageInfo', hash: cell.hash().toString('base64') };
  },
  'GET /api/v2/getTransactions': async (q) => history(parseAddress(q.address), q),
  'POST /emulator/faucet': async (_q, body) => {
    chain.now = clock();
    const to = parseAddress(body.address);
    const result = await faucet.send({ to, value: BigInt(body.amount), bounce: false });
    const tx = result.transactions.find((t) => t.inMessage?.info.dest?.equals?.(to));
    return { lt: tx.lt.toString(), hash: tx.hash().toString('base64') };
  },
  'GET /emulator/time': async () => ({ now: clock() }),
  'POST /emulator/time': async (_q, body) => {
    const target = body.now !== undefined ? Number(body.now) : clock() + Number(body.advance ?? 0);
    if (target < clock()) throw new HttpError(400, 'time only moves forward');
    offset += target - clock();
    return { now: clock() };
  },
  'POST /emulator/snapshot': async () => {
    const id = String(snapshots.size + 1);
    snapshots.set(id, chain.snapshot());
    return { id };
  },
  'POST /emulator/restore': async (_q, body) => {
    const snapshot = snapshots.get(String(body.id));
    if (!snapshot) throw new HttpError(404, `no snapshot ${body.id}`);
    await chain.loadFrom(snapshot);
    return { id: String(body.id) };
  },
};

let queue = Promise.resolve();
const serialized = (fn) => {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
};

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  if (chunks.length === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf-8'));
  } catch {
    throw new HttpError(400, 'body is not JSON');
  }
}

let stopping = false;

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://emulator');
  const handler = routes[`${req.method} ${url.pathname}`];
  let status = 200;
  let payload;
  try {
    if (!handler) throw new HttpError(404, `no route ${req.method} ${url.pathname}`);
    const body = req.method === 'POST' ? await readJson(req) : {};
    if (stopping) throw new HttpError(503, 'the emulator is stopping');
    const result = await serialized(() => handler(Object.fromEntries(url.searchParams), body));
    payload = { ok: true, result };
  } catch (err) {
    status = err instanceof HttpError ? err.status : 500;
    payload = { ok: false, error: err.message, code: status };
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(payload));
});

server.listen(port, host, () => {
  const { port: bound } = server.address();
  process.stdout.write(`listening on http://${host}:${bound}\n`);
});

function save() {
  const state = { chain: snapshotToSerializable(chain.snapshot()), offset, blockSeqno };
  writeFileSync(`${statePath}.tmp`, JSON.stringify(state));
  renameSync(`${statePath}.tmp`, statePath);
}

// Stop taking requests, let the one being applied finish, then save: every answered request is
// in the saved chain, and nothing after it is.
const stop = async () => {
  if (stopping) return;
  stopping = true;
  server.close();
  for (let tail = queue; ; tail = queue) {
    await tail;
    if (tail === queue) break;
  }
  if (statePath) save();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
