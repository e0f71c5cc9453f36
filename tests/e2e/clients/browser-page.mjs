// The browser e2e client: the shared role on the `web` build, driven by browser.mjs through
// window.__e2eGo / __e2eStop, reporting through the functions browser.mjs exposes.
import { CourierClient } from '/courier/web.js';
import { runRole } from './role.mjs';

const q = new URLSearchParams(location.search);
const scenario = await (await fetch('/scenario.json')).json();
const name = q.get('name');
document.getElementById('name').textContent = name;
const counts = { event: 0, ack: 0, gap: 0, dead: 0 };
let buf = [];
const flush = async () => {
  if (buf.length) {
    const lines = buf;
    buf = [];
    await window.__e2eWrite(lines.join(''));
  }
};
setInterval(flush, 200);
const write = (r) => {
  if (r.k in counts) counts[r.k] += 1;
  buf.push(JSON.stringify(r) + '\n');
};
setInterval(() => {
  for (const k of Object.keys(counts)) document.getElementById(k === 'event' ? 'events' : `${k}s`.replace('deads', 'dead')).textContent = String(counts[k]);
}, 250);
let goResolve, stopResolve;
window.__e2eGo = () => goResolve();
window.__e2eStop = () => stopResolve();
const go = new Promise((r) => { goResolve = r; });
const stop = new Promise((r) => { stopResolve = r; });
const status = async (s) => {
  document.getElementById('status').textContent = s;
  await flush();
  await window.__e2eStatus(s);
};
runRole({ CourierClient, url: q.get('url'), token: q.get('token'), scenario, name, write, status, go, stop })
  .catch(async (e) => { await flush(); await window.__e2eStatus(`error ${e}`); });
