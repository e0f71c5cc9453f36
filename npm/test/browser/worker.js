// The same client in a module web worker: the `web` build, fetch and timers from `self`. It
// is given the server's http:// URL (the core derives the WebSocket URL) and never calls
// connect(): subscribing connects.
const params = new URLSearchParams(location.search);
const { CourierClient } = await import(params.get('entry') === 'subscriber' ? '/dist/subscriber-web.js' : '/dist/web.js');
const url = params.get('ws').replace(/^ws/, 'http');
const token = params.get('token');
{
  const client = new CourierClient({ url, token, reconnect: { minDelayMs: 20, baseDelayMs: 50, maxDelayMs: 200 } });
  client.on('state', (state) => self.postMessage({ state }));
  client.subscribe('backtest.browser', (e) => {
    self.postMessage({ event: { offset: e.offset, type: e.type, percent: e.type === 'backtest.progress' ? e.data.percent : undefined } });
  });
}
