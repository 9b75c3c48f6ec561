// The status page: /health, /v1/events and /v1/latest every few seconds; a candlestick chart of
// one symbol and interval, history from /v1/klines, then live bars from the WebSocket server
// (the same credentials as any client). Everything comes from this service; nothing else.
"use strict";

const page = { bars: 0, auth: "none", events: [], symbols: [], errors: 0 };
window.streamerPage = page; // what the browser tests read

const $ = (id) => document.getElementById(id);
const text = (value) => (value === null || value === undefined ? "-" : String(value));
const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");

async function json(url) {
  const reply = await fetch(url, { cache: "no-store" });
  return reply.json();
}

function rows(table, items) {
  const body = $(table).querySelector("tbody");
  body.replaceChildren(...items.map((cells) => {
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = text(cell);
      row.append(td);
    }
    return row;
  }));
}

function badge(value) {
  const span = document.createElement("span");
  span.className = `badge ${value}`;
  span.textContent = value;
  return span;
}

const previous = {}; // connection -> [messages, time]: the rate between two looks

function rate(name, messages) {
  const now = performance.now();
  const before = previous[name];
  previous[name] = [messages, now];
  if (!before || now <= before[1]) return "-";
  return `${((messages - before[0]) / ((now - before[1]) / 1000)).toFixed(1)}/s`;
}

async function refreshHealth() {
  const health = await json("/health");
  $("status").textContent = health.status;
  $("status").className = `badge ${health.status}`;
  $("feed").textContent = health.feed ? `feed ${health.feed}` : "";
  $("problems").textContent = (health.problems || []).join("; ");
  const connections = (health.connector && health.connector.connections) || {};
  rows("connections", Object.entries(connections).map(([name, c]) => [
    name, badge(c.state), c.last_message_age_s === null ? "-" : `${c.last_message_age_s} s ago`,
    c.messages, rate(name, c.messages), c.reconnects,
  ]));
  rows("consumers", Object.entries(health.consumers || {}).map(([name, c]) => [
    name, c.queued_events, c.dropped_events, c.errors, c.state || "ok",
  ]));
}

async function refreshEvents() {
  const events = (await json("/v1/events")).data || [];
  page.events = events;
  const items = events.slice().reverse().slice(0, 100).map((e) => {
    const li = document.createElement("li");
    li.className = e.event;
    const who = e.symbols ? ` ${e.symbols.join(",")}` : "";
    const where = e.connection ? ` [${e.connection}]` : "";
    li.textContent = `${iso(e.timestamp)} ${e.event}${where}${who} ${e.message || ""}`;
    return li;
  });
  $("timeline").replaceChildren(...items);
}

async function refreshLatest() {
  const shown = page.symbols.slice(0, 20);
  const latest = await Promise.all(shown.map((s) => json(`/v1/latest/${s}`).catch(() => ({}))));
  rows("latest", shown.map((symbol, i) => {
    const l = latest[i] || {};
    const price = l.last_price ? l.last_price.price : null;
    const bars = l.klines || {};
    const first = Object.keys(bars)[0];
    const closed = first && bars[first].closed;
    return [symbol, price, closed ? `${first} ${iso(closed.timestamp)} C=${closed.close}` : null];
  }));
}

async function setup() {
  const info = await json("/v1/page");
  $("exchange").textContent = info.exchange;
  const channels = Object.values((await json("/v1/symbols")).channels || {});
  page.symbols = [...new Set(channels.flatMap((c) => c.symbols))];
  const intervals = [...new Set(channels.flatMap((c) => c.intervals))];
  for (const s of page.symbols) $("symbol").append(new Option(s, s));
  for (const i of intervals) $("interval").append(new Option(i, i));
  page.websocketPort = info.websocket_port;
}

// -- the chart --------------------------------------------------------------------------------

let chart = null;
let series = null;
let socket = null;

function candle(k) {
  return { time: k.timestamp / 1000, open: +k.open, high: +k.high, low: +k.low, close: +k.close };
}

async function showChart(event) {
  event.preventDefault();
  const symbol = $("symbol").value;
  const interval = $("interval").value;
  if (!chart) {
    chart = LightweightCharts.createChart($("chart"), { autoSize: true,
      timeScale: { timeVisible: true, secondsVisible: false } });
    series = chart.addSeries(LightweightCharts.CandlestickSeries, {});
  }
  const history = await json(`/v1/klines/${symbol}?interval=${interval}&limit=500`);
  const bars = (history.data || []).map(candle);
  series.setData(bars);
  page.bars = bars.length;
  page.lastBar = bars.length ? bars[bars.length - 1] : null;
  live(symbol, interval);
}

function live(symbol, interval) {
  if (socket) socket.close();
  if (!page.websocketPort) { $("live").textContent = "no WebSocket server: history only"; return; }
  page.auth = "connecting";
  socket = new WebSocket(`ws://${location.hostname}:${page.websocketPort}/`);
  socket.onopen = () => socket.send(JSON.stringify({ user: $("user").value, key: $("key").value }));
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.status === "authenticated") {
      page.auth = "authenticated";
      $("live").replaceChildren(badge("live"));
      socket.send(JSON.stringify({ op: "subscribe", channels: [`klines:${interval}:${symbol}`] }));
      return;
    }
    if (data.error && page.auth !== "authenticated") { refused(data.error); return; }
    if (data.data_type !== "klines") return;
    for (const k of data.data || []) {
      if (k.symbol !== symbol || k.interval !== interval) continue;
      const bar = candle(k);
      if (page.lastBar && bar.time < page.lastBar.time) continue; // older: history has it
      series.update(bar);
      if (!page.lastBar || bar.time > page.lastBar.time) page.bars += 1;
      page.lastBar = bar;
    }
  };
  socket.onclose = () => {
    if (page.auth !== "authenticated") refused("the server closed the connection");
    else $("live").replaceChildren(badge("disconnected"));
  };
}

function refused(why) {
  page.auth = "refused";
  $("live").replaceChildren(badge("refused"), ` ${why}`);
}

async function loop(task, seconds) {
  try { await task(); } catch (error) { page.errors += 1; }
  setTimeout(() => loop(task, seconds), seconds * 1000);
}

setup().then(() => {
  $("chart-form").addEventListener("submit", showChart);
  loop(refreshHealth, 2);
  loop(refreshEvents, 2);
  loop(refreshLatest, 5);
  page.ready = true;
});
