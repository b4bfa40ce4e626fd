// Threshold what-if: live effect on the evaluation data and the PR curve before anything is saved.
const root = document.getElementById("thresholds");
const form = document.getElementById("threshold-form");
const saveForm = document.getElementById("save-form");
const saveButton = document.getElementById("save-thresholds");
let chart = null;
let curvesShown;  // what drawCurves last had (null: the model has none); undefined before it ran
let timer = null;
let latest = 0;

// The "use the model's" box of a threshold: checked, saving stores nothing and the site follows the model.
function followBox(name) {
  return saveForm.querySelector(`input[name="follow_${name}"]`);
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

function nearest(points, threshold) {
  let best = null;
  for (const p of points) {
    if (p.threshold === null || p.threshold === undefined) continue;
    if (!best || Math.abs(p.threshold - threshold) < Math.abs(best.threshold - threshold)) best = p;
  }
  return best;
}

function drawCurves(curves, proposed) {
  curvesShown = curves ?? null;
  const canvas = document.getElementById("chart-pr");
  const missing = document.getElementById("pr-unavailable");
  if (!curves || !window.Chart) { missing.hidden = false; canvas.hidden = true; return; }
  // Each curve with the lines drawn on it: spam's hold (a dot) and reject (a triangle), advice's hold; none
  // without a proposal (values refused).
  const curvesAndLines = [
    ["spam", "#c0392b", proposed ? [["hold", proposed.spam_hold, "circle"], ["reject", proposed.spam_reject, "triangle"]] : []],
    ["medical_advice", "#3366cc", proposed ? [["hold", proposed.advice_hold, "circle"]] : []],
  ];
  const datasets = [];
  for (const [label, color, lines] of curvesAndLines) {
    const points = curves[label] || [];
    const name = label.replace("_", " ");
    datasets.push({ label: `${name} PR`, data: points.map((p) => ({ x: p.recall, y: p.precision })),
      borderColor: color, showLine: true, pointRadius: 0 });
    for (const [line, threshold, pointStyle] of lines) {
      const point = nearest(points, threshold);
      if (point) datasets.push({ label: `${name} ${line} at ${threshold.toFixed(2)}`, pointStyle,
        data: [{ x: point.recall, y: point.precision }], backgroundColor: color, pointRadius: 7 });
    }
  }
  if (chart) { chart.data.datasets = datasets; chart.update(); return; }
  chart = new Chart(canvas, {
    type: "scatter",
    data: { datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { min: 0, max: 1, title: { display: true, text: "recall" } },
                y: { min: 0, max: 1, title: { display: true, text: "precision" } } } },
  });
}

// Set when the admin unticks "use the model's": the value, even the model's own, becomes the site's.
function pinField(name) {
  return saveForm.querySelector(`input[name="pin_${name}"]`);
}

// After a refusal the page shows the values sent, which a slider may not hold ("abc", 1.5: it shows its middle
// or its end): each is what is previewed until the admin moves that slider, so the refusal is not lost unseen.
function sentValues(params) {
  for (const slider of form.querySelectorAll("input[data-sent]")) params.set(slider.name, slider.dataset.sent);
}

async function preview() {
  const params = new URLSearchParams(new FormData(form));
  sentValues(params);
  for (const box of saveForm.querySelectorAll('input[name^="follow_"]:checked')) params.set(box.name, box.value);
  for (const pin of saveForm.querySelectorAll('input[name^="pin_"]')) if (pin.value === "1") params.set(pin.name, "1");
  const asked = ++latest;
  const response = await fetch(`${root.dataset.preview}?${params}`, { headers: { Accept: "application/json" } });
  const data = await response.json();
  if (asked !== latest) return;  // the admin changed something since: that preview is on its way
  // The refusal the page came with was about values since changed: the line by the save button speaks now.
  const refused = document.getElementById("threshold-refused");
  if (refused) refused.hidden = true;
  const problem = document.getElementById("threshold-problem");
  if (!response.ok) {
    // Said where the admin looks, and the figures of the last valid proposal no longer shown as this one's.
    saveButton.disabled = true;
    saveButton.title = data.error;
    if (problem) { problem.textContent = `Cannot save: ${data.error}.`; problem.hidden = false; }
    for (const cell of document.querySelectorAll("[data-proposed], [data-saved-source]")) cell.textContent = "–";
    // Nor its lines on the chart; the curves stay, as on a page refused without the script.
    if (curvesShown === undefined) drawCurvesAlone();
    else drawCurves(curvesShown, null);
    return;
  }
  if (problem) problem.hidden = true;
  for (const [key, value] of Object.entries(data.proposed)) {
    const hidden = saveForm.querySelector(`input[name="${key}"]`);
    if (hidden) hidden.value = value.toFixed(2);
    const box = followBox(key);
    if (box) box.checked = data.own[key] === null;
    // Whose it is once saved, in the page's words (admin._whose: the values compared, not their roundings).
    const saved = document.querySelector(`[data-saved-source="${key}"]`);
    if (saved) saved.textContent = data.sources[key];
  }
  if (data.available) {
    for (const cell of document.querySelectorAll("[data-proposed]")) cell.textContent = percent(data.effect[cell.dataset.proposed]);
    for (const cell of document.querySelectorAll("[data-now]")) cell.textContent = percent(data.current?.[cell.dataset.now]);
  }
  drawCurves(data.curves, data.proposed);
  saveButton.disabled = false;
  saveButton.title = "";
  root.dataset.previewed = "true";
}

// A refused page has no proposal to mark, but its curves still show what moving a line trades.
async function drawCurvesAlone() {
  const asked = latest;
  const response = await fetch(root.dataset.preview, { headers: { Accept: "application/json" } });
  const data = response.ok ? await response.json() : null;
  if (data && asked === latest) drawCurves(data.curves, null);  // else a preview since draws them, with its lines
}

function previewSoon() {
  saveButton.disabled = true;
  // A preview already on its way is of values since changed: its answer would tick "use the model's" again for
  // the slider just moved, and the preview after it would then send that box and put the model's value back.
  latest++;
  clearTimeout(timer);
  timer = setTimeout(preview, 150);
}

function showValue(slider) {
  const out = document.getElementById(slider.dataset.output);
  if (out) out.textContent = Number(slider.value).toFixed(2);
}

if (root && form) {
  form.addEventListener("input", (event) => {
    delete event.target.dataset.sent;
    showValue(event.target);
    // A value moved by hand is the site's own, unless moved back onto the model's: the preview says which.
    const box = followBox(event.target.name);
    if (box) box.checked = false;
    const pin = pinField(event.target.name);
    if (pin) pin.value = "";  // a value moved by hand: kept or changed as the preview says
    previewSoon();
  });
  saveForm.addEventListener("change", (event) => {
    if (!event.target.name?.startsWith("follow_")) return;
    const name = event.target.name.slice("follow_".length);
    const slider = form.querySelector(`input[name="${name}"]`);
    if (event.target.checked && slider) {
      slider.value = event.target.dataset.model;
      delete slider.dataset.sent;
      showValue(slider);
    }
    const pin = pinField(name);
    if (pin) pin.value = event.target.checked ? "" : "1";
    previewSoon();
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); preview(); });
  // A refused page already says why, with nothing to save: previewed again, it would say it twice.
  if (root.dataset.refused) drawCurvesAlone();
  else preview();
}
