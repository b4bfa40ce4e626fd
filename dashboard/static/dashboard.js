// The dashboard's keyboard review and in-place actions. Plain module, no inline script (the CSP forbids it).
const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const help = document.getElementById("help");
const toast = document.getElementById("toast");
const itemsBox = document.getElementById("items");
let current = 0;
let rejectMode = false;
let lastAction = null; // {commentId, decisionId}

function items() {
  return [...document.querySelectorAll("#items .item, .items.single .item")];
}

function say(message, kind = "info") {
  if (!toast) return;
  toast.textContent = message;
  toast.className = `toast ${kind}`;
  toast.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.hidden = true; }, kind === "error" ? 8000 : 4000);
}

function setCurrent(index) {
  const list = items();
  if (!list.length) return;
  current = Math.max(0, Math.min(index, list.length - 1));
  list.forEach((el, i) => el.classList.toggle("current", i === current));
  list[current].scrollIntoView({ block: "nearest" });
  list[current].focus({ preventScroll: true });
}

function currentItem() {
  return items()[current] ?? null;
}

function toggleHelp(show) {
  if (!help) return;
  help.hidden = show === undefined ? !help.hidden : !show;
}

function updateSelected() {
  const counter = document.getElementById("selected-count");
  if (counter) counter.textContent = `${document.querySelectorAll("#items .select:checked").length} selected`;
}

function bumpCount(name, delta) {
  const el = document.querySelector(`[data-count="${name}"]`);
  if (el) el.textContent = String(Math.max(0, Number(el.textContent) + delta));
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    body,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch { data = { message: `the server answered ${response.status}` }; }
  return { response, data };
}

async function submitAction(form) {
  const item = form.closest(".item");
  const { response, data } = await post(form.getAttribute("action"), new FormData(form));
  if (!response.ok || !data.ok) {
    if (response.status === 409 && item) {
      item.classList.add("conflict");
      let note = item.querySelector(".conflict-note");
      if (!note) {
        note = document.createElement("p");
        note.className = "conflict-note";
        item.querySelector(".item-head").after(note);
      }
      note.textContent = `${data.message}. Reload to see what changed.`;
    }
    say(data.message || "That did not work.", "error");
    return;
  }
  const action = form.querySelector('[name="action"]').value;
  if (action === "undo" || !itemsBox) {
    window.location.reload();
    return;
  }
  lastAction = { commentId: data.comment_id, decisionId: data.decision_id };
  say(`#${data.comment_id} ${data.status}. Press u to undo.`);
  const queueName = new URLSearchParams(window.location.search).get("queue") || "held";
  if (queueName !== "all") {
    bumpCount(queueName, -1);
    bumpCount(data.status, +1);
    item.remove();
    const left = items();
    if (!left.length) {
      const more = document.querySelector('.pager a[rel="next"], .pager a[rel="prev"]');
      if (more) { window.location.reload(); return; }
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.id = "empty";
      empty.textContent = "Nothing here. The queue is clear.";
      itemsBox.append(empty);
      return;
    }
    setCurrent(Math.min(current, left.length - 1));
  } else {
    item.querySelector(".badge").textContent = data.status;
  }
  updateSelected();
}

async function undoLast() {
  if (!lastAction) { say("Nothing to undo yet."); return; }
  const body = new FormData();
  body.set("csrf_token", csrfToken);
  body.set("action", "undo");
  body.set("expected_decision_id", String(lastAction.decisionId));
  const { response, data } = await post(`${document.body.dataset.base ?? "/dashboard"}/comments/${lastAction.commentId}/act`, body);
  if (!response.ok || !data.ok) { say(data.message || "Undo failed.", "error"); return; }
  lastAction = null;
  window.location.reload();
}

function startReject(item) {
  rejectMode = true;
  item.querySelector(".reject-reasons")?.classList.add("open");
  say("Reject: 1 spam · 2 medical advice · 3 abuse · 4 off-topic · 5 other (Esc cancels)");
}

function chooseReason(item, digit) {
  const radios = item.querySelectorAll('.reject-form input[name="reason"]');
  const radio = radios[digit - 1];
  if (!radio) return;
  radio.checked = true;
  rejectMode = false;
  const form = item.querySelector(".reject-form");
  if (radio.value === "other") {
    const note = form.querySelector(".note");
    note.focus();
    say("Type a note, then Enter.");
    return;
  }
  form.requestSubmit();
}

function typing(target) {
  return target.closest("input, textarea, select, [contenteditable]") !== null;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Escape") {
    toggleHelp(false);
    rejectMode = false;
    document.querySelectorAll(".reject-reasons.open").forEach((el) => el.classList.remove("open"));
    if (typing(event.target)) event.target.blur();
    return;
  }
  if (typing(event.target)) return;
  const item = currentItem();
  if (rejectMode && item && /^[1-5]$/.test(event.key)) {
    event.preventDefault();
    chooseReason(item, Number(event.key));
    return;
  }
  rejectMode = false;
  switch (event.key) {
    case "?": toggleHelp(); break;
    case "j": setCurrent(current + 1); break;
    case "k": setCurrent(current - 1); break;
    case "a": item?.querySelector(".approve-form button:not([disabled])") && item.querySelector(".approve-form").requestSubmit(); break;
    case "r": if (item) startReject(item); break;
    case "x": {
      const box = item?.querySelector(".select");
      if (box) { box.checked = !box.checked; item.classList.toggle("selected", box.checked); updateSelected(); }
      break;
    }
    case "A": document.querySelector('#bulk-form button[value="approve"]')?.click(); break;
    case "R": document.querySelector('#bulk-form button[value="reject"]')?.click(); break;
    case "u": undoLast(); break;
    case "o":
    case "Enter": {
      const link = item?.querySelector("a.open");
      if (link) window.location.assign(link.href);
      else return;
      break;
    }
    case "/": document.getElementById("search-text")?.focus(); break;
    default: return;
  }
  event.preventDefault();
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("form.confirm") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.matches("form.act")) {
    event.preventDefault();
    submitAction(form).catch((error) => say(`Network error: ${error}`, "error"));
  }
});

document.addEventListener("click", (event) => {
  if (event.target.closest("[data-help-toggle]")) toggleHelp();
  if (event.target.closest("#select-all")) {
    const boxes = [...document.querySelectorAll("#items .select")];
    const all = boxes.every((b) => b.checked);
    boxes.forEach((b) => { b.checked = !all; b.closest(".item").classList.toggle("selected", !all); });
    updateSelected();
  }
  const item = event.target.closest("#items .item");
  if (item) setCurrent(items().indexOf(item));
});

document.addEventListener("change", (event) => {
  if (event.target.matches("#items .select")) {
    event.target.closest(".item").classList.toggle("selected", event.target.checked);
    updateSelected();
  }
});

if (items().length && itemsBox) setCurrent(0);
