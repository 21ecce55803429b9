// Compiles the channel with the pinned Tolk compiler. `--write` refreshes the committed
// artifacts (contracts/build and the copy inside the Python package); `--check` fails when
// either differs from a fresh compile, so the committed code provably comes from the source.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTolkCompiler } from '@ton/tolk-js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'payment_channel.tolk';
export const ARTIFACTS = [
  join(root, 'build', 'payment_channel.compiled.json'),
  join(root, '..', 'operator', 'cocoon', 'ton', 'payment_channel.compiled.json'),
];

export async function compile() {
  const result = await runTolkCompiler({
    entrypointFileName: SOURCE,
    fsReadCallback: (path) => readFileSync(join(root, 'src', path), 'utf-8'),
  });
  if (result.status !== 'ok') {
    throw new Error(`tolk: ${result.message}`);
  }
  const boc = Buffer.from(result.codeBoc64, 'base64');
  const artifact = {
    source: `contracts/src/${SOURCE}`,
    tolkVersion: result.tolkVersion,
    codeHashHex: result.codeHashHex.toLowerCase(),
    codeBoc64: result.codeBoc64,
    codeBocHex: boc.toString('hex'),
  };
  return JSON.stringify(artifact, null, 2) + '\n';
}

async function main(mode) {
  const fresh = await compile();
  if (mode === '--write') {
    for (const path of ARTIFACTS) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, fresh);
    }
    console.log(`wrote ${ARTIFACTS.length} artifacts, code hash ${JSON.parse(fresh).codeHashHex}`);
    return 0;
  }
  let stale = 0;
  for (const path of ARTIFACTS) {
    let committed = '';
    try {
      committed = readFileSync(path, 'utf-8');
    } catch {
      committed = '';
    }
    if (committed !== fresh) {
      console.error(`${path} does not match a fresh compile of src/${SOURCE}: run npm run build`);
      stale += 1;
    }
  }
  if (stale === 0) console.log(`artifacts reproduce: code hash ${JSON.parse(fresh).codeHashHex}`);
  return stale === 0 ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mode = process.argv[2];
  if (mode !== '--write' && mode !== '--check') {
    console.error('usage: compile.mjs --write|--check');
    process.exit(2);
  }
  process.exit(await main(mode));
}
