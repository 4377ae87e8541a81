// The hand-kept declarations (index.d.ts) compile, and describe the API as it is used (test/types/usage.ts).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('index.d.ts type-checks with tsc --noEmit against a usage file', () => {
  const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
  const run = spawnSync(tsc, ['--noEmit', '-p', path.join(ROOT, 'test/types/tsconfig.json')], { encoding: 'utf8' });
  assert.equal(run.error, undefined, `cannot run ${tsc}: ${run.error?.message} (npm ci in clients/js)`);
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
