// Starts dynalite for the tests and exits when the process that started it is gone, so a crashed or killed
// test run never leaves a server behind. Usage: node run.js --port P [--host H] [--path DIR]
'use strict';
const dynalite = require('dynalite');

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(opt('port') || 4567);
const host = opt('host') || '127.0.0.1';
const path = opt('path');

const server = dynalite({ path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(port, host, (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`dynalite listening on ${host}:${port}`);
});

const parent = Number(process.env.CANVAS_PARENT_PID || process.ppid);
setInterval(() => {
  try {
    process.kill(parent, 0);
  } catch (_) {
    process.exit(0);
  }
}, 500);
