// The dashboard's keyboard review and in-place actions. Plain module, no inline script (the CSP forbids it).
const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const help = document.getElementById("help");
const toast = document.getElementById("toast");
const itemsBox = document.getElementById("items");
const bulkBar = document.getElementById("bulk-form");
const base = document.body.dataset.base ?? "/dashboard";
let current = 0;
let rejecting = null; // the item whose reject is being composed, from `r` until it is sent or cancelled
// An `r` that was refused, on its item: see finishRefusedReject.
let refusedReject = null;
let busy = false; // an action is being saved: keys that act would aim at a comment about to change
// Keys that change a comment. They are dropped while an action is saved and when auto-repeated, so a key held
// down or pressed twice does not act on the comment that slides into place after the first one.
const ACTING_KEYS = new Set(["a", "r", "A", "R", "u", "1", "2", "3", "4", "5"]);

function items() {
  return [...document.querySelectorAll("#items .item, .items.single .item")];
}

// After an approve or reject in the queue: an Undo button beside the message, for a pointer or a phone,
// where `u` is out of reach.
function sayWithUndo(message) {
  say(message);
  if (!toast) return;
  const undo = document.createElement("button");
  undo.type = "button";
  undo.className = "toast-undo";
  undo.textContent = "Undo";
  undo.addEventListener("click", () => { toast.hidden = true; undoLast(); });
  toast.append(" ", undo);
}

function say(message, kind = "info") {
  if (!toast) return;
  toast.textContent = message;
  toast.className = `toast ${kind}`;
  toast.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.hidden = true; }, kind === "error" ? 8000 : 4000);
}

// The last action, kept for `u` in this tab's sessionStorage: a comment's page reloads after an action, and
// the queue after an undo or on another page, and `u` must still undo it (and only it: the decision it made).
// It names the account that acted (the page's data-moderator): the tab outlives a session that ends other than
// by its own Sign out (sign-out in another tab, a time-out), and `u` is the signed-in person's own last action,
// never the one of whoever used the tab before (the server lets any moderator undo).
const LAST_ACTION_KEY = "dashboard.lastAction";
const signedInAs = document.body.dataset.moderator ?? null;
let lastActionHere = null; // the same, for a browser that refuses sessionStorage (until the next reload)

// An action kept that this account may undo with `u`: one of its own.
function ownAction(kept) {
  const action = Number.isInteger(kept?.commentId) && Number.isInteger(kept?.decisionId);
  return action && signedInAs !== null && kept.moderator === signedInAs;
}

function lastAction() {
  let kept = null;
  try {
    kept = JSON.parse(sessionStorage.getItem(LAST_ACTION_KEY) ?? "null");
  } catch {
    // storage refused, or a value that is not ours
  }
  if (ownAction(kept)) return kept;
  return ownAction(lastActionHere) ? lastActionHere : null;
}

function keepLastAction(action) {
  const kept = action ? { ...action, moderator: signedInAs } : null;
  try {
    if (kept) sessionStorage.setItem(LAST_ACTION_KEY, JSON.stringify(kept));
    else sessionStorage.removeItem(LAST_ACTION_KEY);
  } catch {
    // Refused: `u` still works until the next reload, from lastActionHere.
  }
  lastActionHere = kept;
}

// What an action that reloads the page did (an undo, any action on a comment's page), said once the page is
// back: the toast itself does not survive the reload. A browser refusing sessionStorage just says nothing.
const AFTER_RELOAD_KEY = "dashboard.afterReload";
// The comment to make current once the page is back (the one an undo brought back to the queue), so that
// the next key acts on the comment the moderator sees, not on the first of the page.
const CURRENT_AFTER_RELOAD_KEY = "dashboard.currentAfterReload";

function reloadSaying(message, commentId = null) {
  try {
    sessionStorage.setItem(AFTER_RELOAD_KEY, message);
    if (commentId !== null) sessionStorage.setItem(CURRENT_AFTER_RELOAD_KEY, String(commentId));
  } catch {
    // Refused: the reload still shows the comment's new status.
  }
  window.location.reload();
}

// A value kept for the page after a reload, read once: null when there is none or storage is refused.
function takeKept(key) {
  try {
    const kept = sessionStorage.getItem(key);
    sessionStorage.removeItem(key);
    return kept;
  } catch {
    return null;
  }
}

function currentAfterReload() {
  // Else the one current when the moderator left this page (opened a comment, say) and came Back to it, else
  // the one a comment's "← Queue" link came back from (#c<id>).
  const linked = /^#c(\d+)$/.exec(window.location.hash)?.[1];
  const kept = takeKept(CURRENT_AFTER_RELOAD_KEY) ?? history.state?.currentComment ?? linked ?? null;
  return Math.max(items().findIndex((el) => el.dataset.commentId === kept), 0);
}

// Kept in this page's history entry, which Back returns to.
function rememberCurrent(commentId) {
  try {
    history.replaceState({ ...history.state, currentComment: commentId }, "");
  } catch {
    // Some browsers cap how often a page may do this (a held-down j): the last one kept is near enough.
  }
}

function sayWhatTheReloadWasFor() {
  const message = takeKept(AFTER_RELOAD_KEY);
  if (message) say(message);
}

// How much of the window's top the sticky bulk bar covers once it sticks (none where it does not: phones).
function barCover() {
  if (!bulkBar || getComputedStyle(bulkBar).position !== "sticky") return 0;
  return bulkBar.getBoundingClientRect().height + (parseFloat(getComputedStyle(bulkBar).top) || 0);
}

// Where the bar's bottom is now: below it the page can be seen (0 when it scrolled away or does not stick).
function barBottomNow() {
  return barCover() ? Math.max(0, bulkBar.getBoundingClientRect().bottom) : 0;
}

// scroll-margin-top (dashboard.css) keeps a comment scrolled to, by us, the focus or a #c123 link, below the bar.
function keepItemsClearOfTheBar() {
  document.documentElement.style.setProperty("--bar-cover", `${Math.ceil(barCover())}px`);
}

const SCROLL_GAP = 8; // px between the bar and the comment, as in .item's scroll-margin-top

// The whole comment in view below the bar; one taller than that room shows its head (its status and article).
function bringIntoView(item) {
  keepItemsClearOfTheBar();
  const rect = item.getBoundingClientRect();
  const visibleTop = barBottomNow();
  if (rect.top >= visibleTop && rect.bottom <= window.innerHeight) return;
  const room = window.innerHeight - barCover() - SCROLL_GAP;
  const fitsBelow = rect.top >= visibleTop && rect.height <= room;
  item.scrollIntoView({ block: fitsBelow ? "nearest" : "start" });
}

// Whether a moderator can see the comment: its head (status, article) at least, below the bar.
function inView(item) {
  const head = (item.querySelector(".item-head") ?? item).getBoundingClientRect();
  return head.bottom > barBottomNow() && head.top < window.innerHeight;
}

function setCurrent(index, { focus = true } = {}) {
  const list = items();
  if (!list.length) return;
  current = Math.max(0, Math.min(index, list.length - 1));
  list.forEach((el, i) => el.classList.toggle("current", i === current));
  bringIntoView(list[current]);
  if (focus) list[current].focus({ preventScroll: true });
  rememberCurrent(list[current].dataset.commentId);
}

function moveBy(step) {
  const list = items();
  const target = current + step;
  if (list.length && (target < 0 || target >= list.length)) {
    // Past either end nothing moves; say so rather than leave the key looking broken.
    const link = document.querySelector(step > 0 ? '.pager a[rel="next"]' : '.pager a[rel="prev"]');
    const end = step > 0 ? "last" : "first";
    say(link ? `This is the ${end} comment on this page: "${link.textContent.trim()}" shows more.` : `This is the ${end} comment.`);
  }
  setCurrent(target);
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

// The tabs' counts as the server counted them after an action, with this page's filters.
function setCounts(counts) {
  for (const [name, count] of Object.entries(counts)) {
    const el = document.querySelector(`[data-count="${name}"]`);
    if (el && Number.isInteger(count)) el.textContent = String(count);
  }
}

function bumpCount(name, delta) {
  const el = document.querySelector(`[data-count="${name}"]`);
  if (el) el.textContent = String(Math.max(0, Number(el.textContent) + delta));
}

// The "N comments" line above the list, when a comment leaves it.
function bumpTotal(delta) {
  const el = document.getElementById("total");
  if (!el) return;
  const total = Math.max(0, Number(el.dataset.total) + delta);
  el.dataset.total = String(total);
  el.textContent = total === 1 ? "1 comment" : `${total} comments`;
}

// The session ended (signed out elsewhere, expired, deactivated): the answer is a 401 `signed_out`, or, from a
// server that redirects instead, the sign-in page fetch followed (and would have reported as "200").
function signedOut(response, data) {
  if (response.status === 401 && data.error === "signed_out") return true;
  return response.redirected && new URL(response.url).pathname === `${base}/login`;
}

function sameSitePath(url) {
  return typeof url === "string" && url.startsWith("/") && !url.startsWith("//") && !url.includes("\\");
}

function loginLink(data) {
  if (sameSitePath(data.login_url)) return data.login_url;
  return `${base}/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`;
}

// Said until the moderator follows the link: nothing they do on this page is saved any more.
function saySignedOut(data) {
  if (!toast) return;
  clearTimeout(say.timer);
  const link = document.createElement("a");
  link.href = loginLink(data);
  link.textContent = "Sign in again";
  link.id = "sign-in-again";
  const message = typeof data.message === "string" && data.message ? data.message : "Your session has ended: sign in again.";
  toast.replaceChildren(`${message} `, link);
  toast.className = "toast error signed-out";
  toast.hidden = false;
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
  if (signedOut(response, data)) {
    saySignedOut(response.redirected ? {} : data); // a followed redirect's body is the sign-in page, not ours
    return { response, data: { ok: false, signedOut: true } };
  }
  return { response, data };
}

// An action on a comment; the keys that act are dropped until it is answered (see ACTING_KEYS).
async function postAction(url, body) {
  busy = true;
  try {
    return await post(url, body);
  } finally {
    busy = false;
  }
}

// What an undo (`u` or the button) did: the status the comment is back to.
function undoneMessage(data) {
  return `#${data.comment_id} back to ${data.status}.`;
}

async function submitAction(form) {
  const item = form.closest(".item");
  const { response, data } = await postAction(form.getAttribute("action"), new FormData(form));
  if (data.signedOut) return;
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
  // An undo (the button) is not undone by `u`; an approve or reject is, after the reload too.
  keepLastAction(action === "undo" ? null : { commentId: data.comment_id, decisionId: data.decision_id });
  const done = action === "undo" ? undoneMessage(data) : `#${data.comment_id} ${data.status}. Press u to undo.`;
  if (action === "undo" || !itemsBox) {
    reloadSaying(done, data.comment_id);
    return;
  }
  if (item === rejecting) cancelReject();
  sayWithUndo(done);
  const queueName = new URLSearchParams(window.location.search).get("queue") || "held";
  // With filters the server says whether the page still lists the comment; else it leaves every queue but "all".
  const leaves = typeof data.listed === "boolean" ? !data.listed : queueName !== "all";
  if (data.counts) setCounts(data.counts);
  else if (queueName !== "all") {
    bumpCount(queueName, -1);
    bumpCount(data.status, +1);
  }
  if (leaves) {
    // Keep the comment the moderator is looking at current (they may have moved on while this was saved).
    if (items().indexOf(item) < current) current -= 1;
    item.remove();
    bumpTotal(-1);
    const left = items();
    if (!left.length) {
      const more = document.querySelector('.pager a[rel="next"], .pager a[rel="prev"]');
      if (more) { reloadSaying(done); return; }
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.id = "empty";
      empty.textContent = "Nothing here. The queue is clear.";
      itemsBox.append(empty);
      return;
    }
    // A field the moderator went on typing in while this was saved (search, a note) keeps the focus.
    setCurrent(Math.min(current, left.length - 1), { focus: !typingField(document.activeElement) });
  } else {
    // Still listed ("all", or a filter it still matches): its buttons and the decision its forms name have
    // changed, so it is shown anew, the moderator's place kept.
    reloadSaying(done, data.comment_id);
    return;
  }
  updateSelected();
}

// The comment a comment's page shows: there `u` undoes only an action on it, not one on another comment.
function pageComment() {
  const single = document.querySelector(".items.single .item");
  return single ? Number(single.dataset.commentId) : null;
}

async function undoLast() {
  const last = lastAction();
  if (!last) { say("Nothing to undo yet."); return; }
  const shown = pageComment();
  if (shown !== null && shown !== last.commentId) {
    say(`Your last action was on #${last.commentId}: undo it there or from the queue.`);
    return;
  }
  const body = new FormData();
  body.set("csrf_token", csrfToken);
  body.set("action", "undo");
  body.set("expected_decision_id", String(last.decisionId)); // the server refuses if the comment changed since
  const { response, data } = await postAction(`${base}/comments/${last.commentId}/act`, body);
  if (data.signedOut) return;
  if (!response.ok || !data.ok) {
    if (response.status === 409) keepLastAction(null); // someone acted after it: it can no longer be undone
    say(data.message || "Undo failed.", "error");
    return;
  }
  keepLastAction(null);
  reloadSaying(undoneMessage(data), data.comment_id);
}

// A keyboard reject is composed in two steps and sent only by Enter in its note field: `r` opens the reasons,
// a digit picks one and moves the focus to the note. Until Enter or Esc no other key acts on any comment, so
// a note typed after the digit stays a note (it used to be read as shortcuts aimed at the next comment).
// A comment the site deleted has no actions (its card says so): keys that act say why nothing happens.
function reviewable(item) {
  const why = whyNoActions(item);
  if (why) say(why);
  return why === null;
}

// Why the comment has no actions: its card's note ("" without one); null when it has actions. `r` asks this,
// not reviewable(), which says the note: `r` says it as a refused reject, and said by both, the toast was given
// it twice and a screen reader read it out twice.
function whyNoActions(item) {
  if (item?.querySelector("form.act")) return null;
  return item?.querySelector(".deleted-note")?.textContent.trim() ?? "";
}

// A refused `r` (the comment is already rejected, deleted, or out of view) starts no reject, but the moderator
// typing "r 2 note Enter" by habit goes on: the digit, the note's letters and Enter are the rest of a reject, and
// read as keys of their own they acted on the comment (Enter opened it, as `o`; the "a" of "advice" approved).
// `item` null: an `r` dropped while the last action was saved, meant for whichever comment comes next.
function refuseReject(item, message) {
  say(message);
  refusedReject = { item, message, reason: false };
}

// Whether the key was the rest of a refused reject, and so does nothing: a digit right after the `r`; after the
// digit, as a note would be typed, every key up to Enter or Esc; Enter ends it. Any other key right after the
// `r` (`j`, `r` again) ends it and acts as ever.
function finishRefusedReject(event) {
  const refused = refusedReject;
  if (refused.item !== null && refused.item !== currentItem()) { refusedReject = null; return false; }
  if (event.key === "Enter") {
    refusedReject = null;
    say(`${refused.message} Nothing was sent.`);
  } else if (/^[1-5]$/.test(event.key) || (refused.reason && event.key.length === 1)) {
    refused.reason = true;
    say(`${refused.message} No reject was started: keys do nothing until Enter or Esc.`);
  } else {
    if (!refused.reason) refusedReject = null;
    return false;
  }
  event.preventDefault();
  return true;
}

function startReject(item) {
  const why = whyNoActions(item);
  if (why !== null) { refuseReject(item, why); return; }
  if (item.querySelector(".reject-form button.reject")?.disabled) {
    refuseReject(item, "This comment is already rejected.");
    return;
  }
  rejecting = item;
  item.querySelector(".reject-reasons")?.classList.add("open");
  say("Reject: 1 spam · 2 medical advice · 3 abuse · 4 off-topic · 5 other (Esc cancels)");
}

function chooseReason(item, digit) {
  const radio = item.querySelectorAll('.reject-form input[name="reason"]')[digit - 1];
  if (!radio) return;
  radio.checked = true;
  item.querySelector(".reject-form .note").focus();
  const noteNeeded = radio.value === "other" ? "say why in the note" : "add a note if you like";
  say(`Reject as ${radio.dataset.label}: ${noteNeeded}, then Enter (Esc cancels).`);
}

function composeReject(event) {
  if (/^[1-5]$/.test(event.key)) {
    event.preventDefault();
    chooseReason(rejecting, Number(event.key));
  } else if (event.key.length === 1 || event.key === "Enter") {
    event.preventDefault();
    say("Finish the reject: 1–5 for the reason, Enter in the note to send, Esc to cancel.");
  }
}

function cancelReject() {
  if (!rejecting) return;
  const item = rejecting;
  rejecting = null;
  item.querySelector(".reject-reasons")?.classList.remove("open");
  item.querySelector(".reject-form")?.reset();
  // Give the keys back to the queue (a focused note would keep them), unless the comment has gone.
  if (item.isConnected && item.contains(document.activeElement)) setCurrent(items().indexOf(item));
}

function typing(target) {
  return target.closest("input, textarea, select, [contenteditable]") !== null;
}

// A field being typed in keeps the focus when its comment is clicked: a click into the note, or the click that
// Enter in the note fires at the Reject button, must not send the next letters to the shortcuts.
function typingField(element) {
  return element !== null && typing(element) && !element.matches('input[type="checkbox"], input[type="radio"]');
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Enter" && event.target.matches?.("#bulk-note")) {
    // The note is the reject's: Enter there rejects the selection (the form's first button would approve).
    event.preventDefault();
    const form = event.target.form;
    form.requestSubmit(form.querySelector('button[value="reject"]'));
    return;
  }
  if (event.key === "Escape") {
    toggleHelp(false);
    cancelReject();
    refusedReject = null;
    if (typing(event.target)) event.target.blur();
    return;
  }
  if (typing(event.target)) return;
  if (rejecting) { composeReject(event); return; }
  if (help && !help.hidden && event.key !== "?") return; // the help covers the queue
  if (refusedReject && finishRefusedReject(event)) return;
  if (ACTING_KEYS.has(event.key) && (event.repeat || busy)) {
    event.preventDefault();
    // The rest of a reject typed on by habit must not act once the save is answered, as after any refused `r`.
    if (event.key === "r" && !event.repeat) refuseReject(null, "The last action was still being saved: that r was not taken.");
    return;
  }
  const item = currentItem();
  if ((event.key === "a" || event.key === "r") && item && !inView(item)) {
    // Scrolled away from it (the mouse, the browser restoring a position): show it before acting on it.
    setCurrent(current);
    const message = `#${item.dataset.commentId} was out of view and is shown now: press ${event.key} again to act on it.`;
    if (event.key === "r") refuseReject(item, message);
    else say(message);
    event.preventDefault();
    return;
  }
  switch (event.key) {
    case "?": toggleHelp(); break;
    case "j": moveBy(1); break;
    case "k": moveBy(-1); break;
    case "a": if (reviewable(item) && item.querySelector(".approve-form button:not([disabled])")) item.querySelector(".approve-form").requestSubmit(); break;
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

// Bulk actions cannot be undone with `u`, so they say what they will do (how many, which reason) and ask.
function confirmBulk(form, submitter) {
  const count = [...form.elements].filter((el) => el.name === "ids" && el.checked).length;
  if (!count) return true; // the server answers "select comments first"
  const comments = count === 1 ? "1 selected comment" : `${count} selected comments`;
  if (submitter?.value === "approve") {
    return window.confirm(`Approve ${comments}? They are published, their sites are told, and u does not undo this.`);
  }
  const reason = form.querySelector("#bulk-reason");
  const note = form.querySelector("#bulk-note")?.value.trim();
  if (reason.value === "other" && !note) {
    // Checked before asking: the server would refuse it, and the selection would be lost with the reload.
    say("Say why in the note when the reason is “Other”.", "error");
    form.querySelector("#bulk-note")?.focus();
    return false;
  }
  const withNote = note ? ` with the note “${note}”` : "";
  return window.confirm(
    `Reject ${comments} as “${reason.selectedOptions[0].textContent}”${withNote}? Their sites are told, and u does not undo this.`,
  );
}

// A reject as "Other" needs a note: said here, with the note still focused, rather than by the server's refusal.
function rejectNeedsNote(form) {
  if (!form.matches(".reject-form")) return false;
  const reason = form.querySelector('input[name="reason"]:checked');
  const note = form.querySelector(".note");
  if (reason?.value !== "other" || note?.value.trim()) return false;
  say("Say why in the note when the reason is “Other”.", "error");
  note?.focus();
  return true;
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("form.confirm") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.matches("#bulk-form") && !confirmBulk(form, event.submitter)) {
    event.preventDefault();
    return;
  }
  if (form.querySelector("#logout")) keepLastAction(null); // the next person in this tab has nothing to undo
  if (form.matches("form.act")) {
    event.preventDefault();
    if (busy) return; // a second Enter or click while the first is saved would act twice
    if (rejectNeedsNote(form)) return;
    submitAction(form).catch((error) => say(`Network error: ${error}`, "error"));
  }
});

document.addEventListener("click", (event) => {
  refusedReject = null; // a click starts anew: the keys after it are no refused reject's rest
  if (event.target.closest("[data-help-toggle]")) toggleHelp();
  if (event.target.closest("#select-all")) {
    const boxes = [...document.querySelectorAll("#items .select")];
    const all = boxes.every((b) => b.checked);
    boxes.forEach((b) => { b.checked = !all; b.closest(".item").classList.toggle("selected", !all); });
    updateSelected();
  }
  const item = event.target.closest("#items .item");
  if (!item) return;
  if (rejecting && rejecting !== item) cancelReject();
  setCurrent(items().indexOf(item), { focus: !typingField(document.activeElement) });
});

document.addEventListener("change", (event) => {
  if (event.target.matches("#items .select")) {
    event.target.closest(".item").classList.toggle("selected", event.target.checked);
    updateSelected();
  }
});

window.addEventListener("resize", keepItemsClearOfTheBar);
if (bulkBar && "ResizeObserver" in window) new ResizeObserver(keepItemsClearOfTheBar).observe(bulkBar);
const startAt = currentAfterReload(); // read (and so forgotten) on every page, even one without a queue
if (items().length && itemsBox) setCurrent(startAt);
sayWhatTheReloadWasFor();
