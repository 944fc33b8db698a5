// One live view of the gateway over Server-Sent Events: `view` after every change, `beat` every
// few seconds. EventSource reconnects by itself after a network error; after a refusal (the
// gateway restarting behind a proxy) it gives up, so we open a new one. The page says "stale"
// when it has heard nothing for STALE_MS.
"use strict";
const STALE_MS = 5000;

function liveView(url, onView) {
  const link = document.getElementById("link");
  const clock = { offset: 0 };  // server wall time minus ours
  let heard = 0;
  let source = null;
  const mark = (state, text) => { setData(link, "state", state); setText(link, text); };
  const hear = (served) => { heard = Date.now(); clock.offset = served - heard; };
  function open() {
    source = new EventSource(url);
    source.addEventListener("view", (e) => {
      const view = JSON.parse(e.data);
      hear(view.served);
      mark("live", "live");
      onView(view, clock);
    });
    source.addEventListener("beat", (e) => { hear(JSON.parse(e.data).served); mark("live", "live"); });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 1000);
    };
  }
  setInterval(() => {
    const silent = Date.now() - heard;
    if (heard && silent > STALE_MS) mark("stale", `STALE: no data for ${Math.round(silent / 1000)} s`);
  }, 1000);
  open();
  return clock;
}

function since(ms, clock) {
  const s = Math.max(0, Math.round((Date.now() + clock.offset - ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
function setData(node, key, value) { if (node.dataset[key] !== value) node.dataset[key] = value; }
