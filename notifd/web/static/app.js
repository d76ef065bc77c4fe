// The live page: what this daemon serves, new items as they come (Server-Sent Events),
// and a form that posts with a publisher token. Plain DOM, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);

const FEED_KEPT = 200;  // items the live feed shows; older ones leave it (the newest lists stay)
const REFRESH_EVERY = 1000;  // ms: at most one /v1/status per second, however fast items come

function itemLine(item) {
  const li = document.createElement("li");
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = item.type;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = item.text;
  li.append(type, text);
  if (item.created_at) {
    const when = document.createElement("time");
    when.dateTime = item.created_at;
    when.textContent = new Date(item.created_at).toLocaleTimeString();
    li.append(when);
  }
  return li;
}

function showStatus(status) {
  $("node").textContent = "node " + status.node;
  $("types").textContent = status.types.join(", ");
  const connections = $("connections");
  connections.replaceChildren();
  const labels = {line: "line protocol", notif_mode: "in notification mode", websocket: "WebSocket",
                  events: "event streams", http: "other HTTP"};
  for (const [kind, label] of Object.entries(labels)) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = status.connections[kind];
    connections.append(dt, dd);
  }
  const newest = $("newest");
  newest.replaceChildren();
  for (const type of status.types) {
    const title = document.createElement("h3");
    title.textContent = type;
    const list = document.createElement("ul");
    for (const item of status.newest[type]) list.append(itemLine(item));
    if (!status.newest[type].length) list.append(Object.assign(document.createElement("li"), {textContent: "none"}));
    newest.append(title, list);
  }
  const select = $("post-type");
  if (!select.options.length) {
    for (const type of status.types) select.append(new Option(type, type));
  }
}

async function refresh() {
  try {
    const answer = await fetch("v1/status", {cache: "no-store"});
    if (answer.ok) showStatus(await answer.json());
  } catch (error) {
    // The daemon is restarting: the next refresh tries again.
  }
}

// A burst of items asks for one refresh, at most one per REFRESH_EVERY, the last after the burst.
let refreshTimer = null;
let refreshWanted = false;
function refreshSoon() {
  refreshWanted = true;
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(async () => {
    refreshWanted = false;
    await refresh();
    refreshTimer = null;
    if (refreshWanted) refreshSoon();
  }, REFRESH_EVERY);
}

function follow(types) {
  const events = new EventSource("v1/events");
  const state = $("feed-state");
  events.onopen = () => { state.textContent = "live"; };
  events.onerror = () => { state.textContent = "reconnecting…"; };
  for (const type of types) {
    events.addEventListener(type, (event) => {
      const feed = $("feed");
      feed.prepend(itemLine(JSON.parse(event.data)));
      while (feed.children.length > FEED_KEPT) feed.lastElementChild.remove();
      refreshSoon();
    });
  }
}

async function post(event) {
  event.preventDefault();
  const result = $("post-result");
  const type = $("post-type").value;
  try {
    const answer = await fetch("v1/items/" + encodeURIComponent(type), {
      method: "POST",
      headers: {"Content-Type": "text/plain; charset=utf-8", "Authorization": "Bearer " + $("post-token").value},
      body: $("post-text").value,
    });
    const body = await answer.json();
    result.className = answer.ok ? "ok" : "error";
    result.textContent = answer.ok ? `posted ${body.type} ${body.id}` : `${answer.status} ${body.title}: ${body.detail}`;
    if (answer.ok) $("post-text").value = "";
  } catch (error) {
    result.className = "error";
    result.textContent = "cannot reach notifd";
  }
}

async function start() {
  $("post").addEventListener("submit", post);
  const answer = await fetch("v1/status", {cache: "no-store"});
  const status = await answer.json();
  if (!answer.ok) {  // anonymous clients are not served here: nothing to show without a token
    $("node").textContent = status.detail;
    $("feed-state").textContent = "off";
    return;
  }
  showStatus(status);
  follow(status.types);
  setInterval(refresh, 5000);
}

start();
