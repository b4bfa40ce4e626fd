// Threshold what-if: live effect on the evaluation data and the PR curve before anything is saved.
const root = document.getElementById("thresholds");
const form = document.getElementById("threshold-form");
const saveForm = document.getElementById("save-form");
const saveButton = document.getElementById("save-thresholds");
let chart = null;
let timer = null;

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
  const canvas = document.getElementById("chart-pr");
  const missing = document.getElementById("pr-unavailable");
  if (!curves || !window.Chart) { missing.hidden = false; canvas.hidden = true; return; }
  const marks = [
    ["spam", proposed.spam_hold, "#c0392b"],
    ["medical_advice", proposed.advice_hold, "#3366cc"],
  ];
  const datasets = [];
  for (const [label, threshold, color] of marks) {
    const points = curves[label] || [];
    datasets.push({ label: `${label.replace("_", " ")} PR`, data: points.map((p) => ({ x: p.recall, y: p.precision })),
      borderColor: color, showLine: true, pointRadius: 0 });
    const point = nearest(points, threshold);
    if (point) datasets.push({ label: `${label.replace("_", " ")} at ${threshold.toFixed(2)}`,
      data: [{ x: point.recall, y: point.precision }], backgroundColor: color, pointRadius: 7 });
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

async function preview() {
  const params = new URLSearchParams(new FormData(form));
  const response = await fetch(`${root.dataset.preview}?${params}`, { headers: { Accept: "application/json" } });
  const data = await response.json();
  if (!response.ok) { saveButton.disabled = true; saveButton.title = data.error; return; }
  for (const [key, value] of Object.entries(data.proposed)) {
    const hidden = saveForm.querySelector(`input[name="${key}"]`);
    if (hidden) hidden.value = value.toFixed(2);
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

if (root && form) {
  form.addEventListener("input", (event) => {
    const out = document.getElementById(event.target.dataset.output);
    if (out) out.textContent = Number(event.target.value).toFixed(2);
    saveButton.disabled = true;
    clearTimeout(timer);
    timer = setTimeout(preview, 150);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); preview(); });
  preview();
}
