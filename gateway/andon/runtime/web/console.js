// The supervisor console: acknowledge and resolve non-cord calls, annotate any call with a
// reason code and comment, mark kanban cards lost or found. Every action goes to the gateway,
// which logs it as an operator record and answers done or why it refused.
"use strict";
let consoleClock = { offset: 0 };

async function act(body) {
  const message = document.getElementById("message");
  const answer = await fetch("/api/v1/operator", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const reply = await answer.json().catch(() => ({ detail: answer.statusText }));
  message.className = answer.ok ? "" : "refused";
  message.textContent = answer.ok ? `${body.action} done` : `refused: ${reply.detail}`;
}

function button(text, body) {
  const b = el("button", "", text);
  b.dataset.action = body.action;
  b.onclick = () => act(body);
  return b;
}

function renderCalls(view) {
  const rows = view.calls.map((c) => {
    const row = el("tr");
    row.dataset.call = c.id;
    const state = c.stopped ? "line stopped" : c.acknowledged ? `acknowledged ${c.acknowledged_by || ""}` : "open";
    for (const text of [c.id, `${c.line}/${c.station}`, c.cause, since(c.opened, consoleClock), state]) row.appendChild(el("td", "", text));
    const actions = el("td");
    if (!c.acknowledged) actions.appendChild(button("Acknowledge", { action: "acknowledge", call: c.id }));
    if (c.cause !== "cord") actions.appendChild(button("Resolve", { action: "resolve", call: c.id }));
    row.appendChild(actions);
    return row;
  });
  document.getElementById("calls").replaceChildren(...rows);
}

async function setup() {
  const answer = await fetch("/api/v1/console/setup");
  const { reasons, cards } = await answer.json();
  document.getElementById("reasons").append(...reasons.map((r) => { const o = el("option", "", r.label); o.value = r.code; return o; }));
  document.getElementById("cards").replaceChildren(...cards.map((card) => {
    const row = el("tr");
    row.append(el("td", "", card.uid), el("td", "", card.part));
    const actions = el("td");
    actions.append(button("Lost", { action: "card_lost", card: card.uid }), button("Found", { action: "card_found", card: card.uid }));
    row.appendChild(actions);
    return row;
  }));
}

document.getElementById("annotate").onsubmit = (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  act({ action: "annotate", call: form.get("call"), reason: form.get("reason") || null, comment: form.get("comment") || null });
};
consoleClock = liveView("/api/v1/stream", renderCalls);
setup();
