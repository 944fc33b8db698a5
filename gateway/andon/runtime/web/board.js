// The live board: /board (the whole plant, compact) or /board/{line}. One tile per station in
// line order, in its state's colour; a banner per line; takt; open kanban orders; alerts.
"use strict";
const lineId = decodeURIComponent(location.pathname.split("/")[2] || "");
const lineSections = new Map();  // line id -> {root, banner, tiles: Map(station id -> tile)}
let last = null;
let clock = null;

function tileFor(tiles, container, station) {
  let tile = tiles.get(station.id);
  if (!tile) {
    tile = el("div", "tile");
    tile.dataset.station = station.id;
    for (const part of ["id", "sname", "cause", "age", "ack", "countdown"]) {
      tile.appendChild(el("div", part));
    }
    tiles.set(station.id, tile);
    container.appendChild(tile);
  }
  return tile;
}

function sectionFor(line) {
  let section = lineSections.get(line.id);
  if (!section) {
    const root = el("section", "line");
    root.dataset.line = line.id;
    const banner = el("div", "banner");
    for (const part of ["name", "state", "cause", "duration", "takt"]) banner.appendChild(el("span", part));
    const tiles = el("div", "tiles");
    root.append(banner, tiles);
    document.getElementById("lines").appendChild(root);
    section = { root, banner, container: tiles, tiles: new Map() };
    lineSections.set(line.id, section);
  }
  return section;
}

function stationCalls(view, line, station) {
  const ids = station.calls;
  return view.calls.filter((c) => ids ? ids.includes(c.id) : c.line === line.id && c.station === station.id);
}

function renderTile(tile, view, line, station) {
  const calls = stationCalls(view, line, station);
  const shown = calls.find((c) => c.cause === station.call) || calls[0];
  setData(tile, "state", station.state);
  setData(tile, "material", String(!!station.material));
  const part = (name) => tile.querySelector("." + name);
  setText(part("id"), station.id);
  setText(part("sname"), station.name);
  setText(part("cause"), calls.map((c) => c.cause).join(" + ") || (station.online ? "" : "offline"));
  setText(part("age"), station.state === "running" ? "" : since(station.since, clock));
  const acked = shown && shown.acknowledged;
  setText(part("ack"), acked ? `ACK ${shown.acknowledged_by || ""}`.trim() : "");
  const pending = calls.filter((c) => c.stop_at && !c.stopped).map((c) => c.stop_at);
  const left = pending.length ? Math.min(...pending) - (Date.now() + clock.offset) : null;
  setText(part("countdown"), left === null ? "" : `STOP in ${Math.max(0, Math.ceil(left / 1000))} s`);
}

function lineCause(view, line) {
  if (line.state === "stopped") return line.stop_cause || causesAt(view, line, line.stopped);
  if (line.state === "called") return causesAt(view, line, line.called);
  return "";
}

function causesAt(view, line, stationIds) {
  const causes = view.calls.filter((c) => c.line === line.id && stationIds.includes(c.station));
  return [...new Set(causes.map((c) => `${c.cause} @ ${c.station}`))].join(", ");
}

function renderLine(view, line) {
  const section = sectionFor(line);
  const banner = section.banner;
  setData(banner, "state", line.state);
  const part = (name) => banner.querySelector("." + name);
  setText(part("name"), `${line.id} ${line.name}`);
  setText(part("state"), line.state.toUpperCase());
  setText(part("cause"), lineCause(view, line));
  setText(part("duration"), line.state === "running" ? "" : since(line.since, clock));
  const shift = (line.takt && line.takt.shifts || []).find((s) => s.current);
  setText(part("takt"), shift ? `${shift.shift}: plan ${shift.plan} · actual ${shift.actual}` : "");
  for (const station of line.stations) renderTile(tileFor(section.tiles, section.container, station), view, line, station);
}

function renderLists(view) {
  const orders = document.getElementById("orders");
  const open = view.orders.filter((o) => o.received === null || o.received === undefined);
  orders.replaceChildren(...open.map((o) => {
    const item = el("li", o.overdue ? "overdue" : "",
      `${o.part} ×${o.qty} for ${o.line}/${o.station} from ${o.supplier}: ${since(o.posted, clock)}` +
      (o.overdue ? " OVERDUE" : ""));
    item.dataset.order = o.id;
    return item;
  }));
  const alerts = document.getElementById("alerts");
  const recent = (view.alerts || []).slice(-8).reverse();
  alerts.replaceChildren(...recent.map((a) => el("li", "alert", `${a.kind}: ${a.text}`)));
}

function render(view) {
  for (const line of view.lines) renderLine(view, line);
  renderLists(view);
}

function tick() {
  setText(document.getElementById("clock"), clock ? new Date(Date.now() + clock.offset).toLocaleTimeString() : "");
  if (last) render(last);
}

document.body.classList.toggle("plant", !lineId);
document.title = lineId ? `andon ${lineId}` : "andon plant";
clock = liveView("/api/v1/stream" + (lineId ? `?line=${encodeURIComponent(lineId)}` : ""), (view) => {
  document.getElementById("title").textContent = `${view.site}${lineId ? " / " + lineId : ""}`;
  last = view;
  render(view);
});
setInterval(tick, 1000);
