// `npm pack` makes a package that installs into another project and imports by its name, with its README and
// types; and it has no runtime dependencies.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack produces an installable package', () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(manifest.dependencies, undefined, 'no runtime dependencies');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'canvas-client-pack-'));
  try {
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], ROOT));
    const files = packed.files.map((f) => f.path);
    for (const file of ['README.md', 'index.d.ts', 'package.json', 'src/index.js', 'src/document.js']) {
      assert.ok(files.includes(file), `${file} is in the package`);
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), `only the library: ${files}`);

    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    npm(['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', path.join(dir, packed.filename)], app);
    const exported = execFileSync(process.execPath, ['--input-type=module', '-e',
      "const m = await import('canvas-client'); console.log(Object.keys(m).sort().join(','))"], { cwd: app, encoding: 'utf8' });
    assert.equal(exported.trim(), 'CanvasDocument,CanvasError,DEFAULTS,connect,createDocument,newObjectId');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
