// The dashboard: live progress bars, a trade table and a connection badge, from one
// subscription. `/config.json` (written by serve.mjs) says where the server is and which
// token to use; `/courier/web.js` is the package's browser build.
import { CourierClient } from '/courier/web.js';

const config = await (await fetch('/config.json')).json();
const $ = (id) => document.getElementById(id);
$('channel').textContent = config.channel;

const bars = new Map();
let trades = 0;
let reconnects = 0;
let everConnected = false;

function backtestRow(id) {
  let row = bars.get(id);
  if (!row) {
    $('backtests').querySelector('.empty')?.remove();
    row = document.createElement('div');
    row.className = 'backtest';
    row.dataset.backtest = id;
    row.innerHTML = `<div class="label"><span class="name"></span><span class="pct">0%</span></div><div class="bar"><div style="width:0%"></div></div>`;
    row.querySelector('.name').textContent = id;
    $('backtests').prepend(row);
    bars.set(id, row);
  }
  return row;
}

function setProgress(id, percent) {
  const row = backtestRow(id);
  row.querySelector('.bar > div').style.width = `${percent}%`;
  row.querySelector('.pct').textContent = `${percent.toFixed(0)}%`;
  row.dataset.percent = String(percent);
}

function addTrade(t) {
  trades += 1;
  $('trade-count').textContent = String(trades);
  const tr = document.createElement('tr');
  const cells = [new Date(t.executed_at ?? Date.now()).toLocaleTimeString(), t.backtest_id ?? '', t.side, t.quantity, t.symbol, t.price];
  for (const [i, text] of cells.entries()) {
    const td = document.createElement('td');
    td.textContent = text;
    if (i === 2) td.className = t.side;
    tr.append(td);
  }
  const body = $('trades').tBodies[0];
  body.prepend(tr);
  while (body.rows.length > 25) body.deleteRow(-1);
}

function showState(state) {
  if (state === 'connected') {
    if (everConnected) reconnects += 1;
    everConnected = true;
  }
  const badge = $('badge');
  badge.className = `badge ${state}`;
  badge.dataset.state = state;
  badge.dataset.reconnects = String(reconnects);
  badge.textContent = reconnects > 0 && state === 'connected' ? `connected · reconnected ${reconnects}×` : state;
}

const client = new CourierClient({ url: config.url, token: config.token });
client.on('state', showState);
client.on('gap', (gap) => { $('status').textContent = `gap on ${gap.channel}: ${gap.reason}`; });
client.on('error', (err) => { $('status').textContent = `${err.code}: ${err.message}`; });
client.subscribe(config.channel, (e) => {
  switch (e.type) {
    case 'backtest.started': backtestRow(e.data.backtest_id); break;
    case 'backtest.progress': setProgress(e.data.backtest_id, e.data.percent); break;
    case 'backtest.completed': setProgress(e.data.backtest_id, 100); backtestRow(e.data.backtest_id).classList.add('done'); break;
    case 'trade.executed': addTrade(e.data); break;
    default: break;
  }
});
client.connect();
window.courier = client; // for the browser test and curious developers
