// Keeps the comment list and the author's statuses current as decisions arrive by callback.
const box = document.getElementById("comments");

function item(comment, withStatus) {
  const li = document.createElement("li");
  li.dataset.id = comment.id;
  li.className = `status-${comment.status}`;
  if (!withStatus) {
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = comment.name;
    const time = document.createElement("time");
    time.textContent = comment.created_at.slice(0, 16).replace("T", " ");
    who.append(" ", time);
    li.append(who);
  }
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = comment.body; // text, never HTML
  li.append(body);
  if (withStatus) {
    const status = document.createElement("p");
    status.className = "status";
    const strong = document.createElement("strong");
    strong.textContent = comment.status_text;
    status.append("Status: ", strong);
    li.append(status);
  }
  return li;
}

async function refresh() {
  try {
    const data = await (await fetch(box.dataset.source, { headers: { Accept: "application/json" } })).json();
    const published = document.getElementById("published");
    published.replaceChildren(...(data.published.length ? data.published.map((c) => item(c, false)) : [Object.assign(document.createElement("li"), { className: "none", textContent: "No comments yet." })]));
    const mine = document.getElementById("mine");
    mine.replaceChildren(...data.mine.map((c) => item(c, true)));
    document.getElementById("your-comments").hidden = data.mine.length === 0;
  } catch {
    // the next poll tries again
  }
}

if (box) setInterval(refresh, 1500);
