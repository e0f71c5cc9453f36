// A terminal view of a backtest channel: a live progress bar and one line per trade.
//
//   node subscriber.mjs --url ws://127.0.0.1:8766/ws --token "$JWT" [--channel backtest.demo] [--exit-after-complete]
//
// It imports the package built in ../../npm (in your project: `import … from 'courier-client'`).
import { parseArgs } from 'node:util';
import { CourierClient } from '../../npm/dist/node.js';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8766/ws' },
    token: { type: 'string' },
    channel: { type: 'string', default: 'backtest.demo' },
    'exit-after-complete': { type: 'boolean', default: false },
  },
});
if (!args.token) {
  console.error('usage: node subscriber.mjs --url ws://host:port/ws --token JWT [--channel backtest.demo]');
  process.exit(2);
}

const tty = process.stdout.isTTY;
let bar = '';
const drawBar = (id, percent) => {
  const width = 30;
  const filled = Math.round((percent / 100) * width);
  bar = `${id} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${percent.toFixed(0).padStart(3)}%`;
  if (tty) process.stdout.write(`\r${bar}`);
};
const line = (text) => {
  if (tty && bar) process.stdout.write('\r\x1b[2K');
  console.log(text);
  if (tty && bar) process.stdout.write(bar);
};

const client = new CourierClient({ url: args.url, token: args.token });
client.on('state', (state) => line(`connection: ${state}`));
client.on('gap', (gap) => line(`gap on ${gap.channel}: ${gap.reason} (events may be missing)`));
client.on('error', (err) => line(`error: ${err.code}: ${err.message}`));

client.subscribe(args.channel, (e) => {
  switch (e.type) {
    case 'backtest.started':
      line(`backtest ${e.data.backtest_id} started (${e.data.strategy_id})`);
      break;
    case 'backtest.progress':
      if (tty) drawBar(e.data.backtest_id, e.data.percent);
      else if (e.data.percent % 20 === 0) line(`${e.data.backtest_id} ${e.data.percent}%`);
      break;
    case 'trade.executed':
      line(`trade ${e.data.side.padEnd(4)} ${e.data.quantity.padStart(5)} ${e.data.symbol.padEnd(5)} @ ${e.data.price}`);
      break;
    case 'backtest.completed':
      line(`backtest ${e.data.backtest_id} completed: return ${e.data.total_return ?? '?'}, ${e.data.trades ?? 0} trades`);
      bar = '';
      if (args['exit-after-complete']) {
        client.close();
        process.exit(0);
      }
      break;
    default:
      line(`${e.type} #${e.offset}`);
  }
});
client.connect();

const stop = () => {
  client.close();
  if (tty) process.stdout.write('\n');
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
