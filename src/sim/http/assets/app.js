// dkim-relay SES simulator: a little progressive enhancement, no build step, no dependencies.
// The list page updates live from Mailpit's WebSocket events (/api/events); the message page
// turns its sections into keyboard-accessible tabs. Message data is only ever set with
// textContent, never as HTML.
"use strict";

function badge(word, label) {
  const span = document.createElement("span");
  const cls = word === "pass" ? "ok" : (["fail", "permerror", "softfail"].includes(word) ? "bad" : "warn");
  span.className = "badge " + cls;
  span.textContent = label + " " + (word || "none");
  return span;
}

function tagValue(tags, prefix) {
  for (const t of tags || []) {
    if (t.startsWith(prefix)) {
      const v = t.slice(prefix.length);
      if (v && v !== "aligned") return v;
    }
  }
  return "none";
}

function addr(a) {
  if (!a) return "";
  return a.Name ? a.Name + " <" + a.Address + ">" : a.Address;
}

function row(m, fresh) {
  const tr = document.createElement("tr");
  tr.dataset.id = m.ID;
  tr.className = (m.Read ? "read" : "unread") + (fresh ? " fresh" : "");
  const cells = [m.Created, addr(m.From), (m.To || []).map(addr).join(", ")];
  const tdTime = document.createElement("td");
  const time = document.createElement("time");
  time.dateTime = cells[0];
  time.textContent = cells[0];
  tdTime.appendChild(time);
  tr.appendChild(tdTime);
  for (const text of cells.slice(1)) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  const tdSubject = document.createElement("td");
  const a = document.createElement("a");
  a.href = "/view/" + encodeURIComponent(m.ID);
  a.textContent = m.Subject || "(no subject)";
  tdSubject.appendChild(a);
  tr.appendChild(tdSubject);
  const tdVerdict = document.createElement("td");
  tdVerdict.append(badge(tagValue(m.Tags, "dkim-"), "DKIM"), " ",
    badge(tagValue(m.Tags, "spf-"), "SPF"), " ", badge(tagValue(m.Tags, "dmarc-"), "DMARC"));
  tr.appendChild(tdVerdict);
  return tr;
}

async function reload(table, freshId) {
  const query = table.dataset.query || "";
  const url = query ? "/api/v1/search?limit=200&query=" + encodeURIComponent(query)
                    : "/api/v1/messages?limit=200";
  const res = await fetch(url);
  if (!res.ok) return;
  const data = await res.json();
  const body = table.tBodies[0];
  body.replaceChildren(...data.messages.map((m) => row(m, m.ID === freshId)));
  const status = document.getElementById("status");
  const n = data.messages_count;
  let text = n + (n === 1 ? " message" : " messages");
  if (freshId) {
    const m = data.messages.find((x) => x.ID === freshId);
    if (m) text += " — new: " + (m.Subject || "(no subject)");
  }
  if (status) status.textContent = text;
}

function live(table) {
  let delay = 500;
  const connect = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/api/events");
    ws.onopen = () => { delay = 500; reload(table); document.body.dataset.live = "yes"; };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (["new", "delete", "update", "prune", "truncate"].includes(msg.Type)) {
        reload(table, msg.Type === "new" && msg.Data ? msg.Data.ID : undefined);
      }
    };
    ws.onclose = () => {
      document.body.dataset.live = "no";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  connect();
}

function tabs(nav) {
  const links = Array.from(nav.querySelectorAll("a[href^='#']"));
  const panels = links.map((a) => document.getElementById(a.getAttribute("href").slice(1)));
  if (panels.some((p) => !p)) return;
  const list = nav.querySelector("ul");
  list.setAttribute("role", "tablist");
  const buttons = links.map((a, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.id = "tab-" + panels[i].id;
    b.setAttribute("role", "tab");
    b.setAttribute("aria-controls", panels[i].id);
    b.textContent = a.textContent;
    a.parentElement.setAttribute("role", "presentation");
    a.replaceWith(b);
    panels[i].setAttribute("role", "tabpanel");
    panels[i].setAttribute("aria-labelledby", b.id);
    panels[i].tabIndex = 0;
    return b;
  });
  const select = (i, focus) => {
    buttons.forEach((b, j) => {
      const on = i === j;
      b.setAttribute("aria-selected", on ? "true" : "false");
      b.tabIndex = on ? 0 : -1;
      panels[j].hidden = !on;
    });
    if (focus) {
      buttons[i].focus();
      history.replaceState(null, "", "#" + panels[i].id);
    }
  };
  buttons.forEach((b, i) => {
    b.addEventListener("click", () => select(i, false));
    b.addEventListener("keydown", (e) => {
      const last = buttons.length - 1;
      let next = null;
      if (e.key === "ArrowRight") next = i === last ? 0 : i + 1;
      else if (e.key === "ArrowLeft") next = i === 0 ? last : i - 1;
      else if (e.key === "Home") next = 0;
      else if (e.key === "End") next = last;
      if (next !== null) { e.preventDefault(); select(next, true); }
    });
  });
  const start = panels.findIndex((p) => "#" + p.id === location.hash);
  select(start < 0 ? 0 : start, false);
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("messages");
  if (table) live(table);
  const nav = document.querySelector("nav.tabs");
  if (nav) tabs(nav);
});
