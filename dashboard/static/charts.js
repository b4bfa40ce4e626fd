// Overview charts from /dashboard/overview/data (Chart.js, vendored).
const box = document.getElementById("overview-charts");
const colors = {
  approve: "#2f8f4e", hold: "#d19a00", reject: "#c0392b", deleted: "#999999", line: "#3366cc", age: "#8e44ad",
};
const agreementColors = {
  "hold approved": colors.approve,
  "hold rejected": colors.reject,
  "approve overturned": colors.hold,
  "reject overturned": colors.age,
};
const whole = { beginAtZero: true, ticks: { precision: 0 } };

async function draw() {
  const data = await (await fetch(box.dataset.source, { headers: { Accept: "application/json" } })).json();
  const base = { animation: false, responsive: true, maintainAspectRatio: false };
  new Chart(document.getElementById("chart-per-day"), {
    type: "bar",
    data: {
      labels: data.days,
      datasets: [
        { label: "approved", data: data.per_day.approve, backgroundColor: colors.approve },
        { label: "held", data: data.per_day.hold, backgroundColor: colors.hold },
        { label: "rejected", data: data.per_day.reject, backgroundColor: colors.reject },
        // Counted apart, not by the decision they had: they are in no queue any more.
        { label: "deleted by the site", data: data.per_day.deleted, backgroundColor: colors.deleted },
      ],
    },
    options: { ...base, scales: { x: { stacked: true }, y: { ...whole, stacked: true } } },
  });
  new Chart(document.getElementById("chart-queue"), {
    type: "line",
    data: {
      labels: data.days,
      datasets: [
        { label: "held comments", data: data.queue_size, borderColor: colors.line, yAxisID: "y" },
        { label: "oldest (hours)", data: data.queue_oldest_hours, borderColor: colors.age, yAxisID: "hours" },
      ],
    },
    options: { ...base, scales: { y: { ...whole, position: "left" }, hours: { beginAtZero: true, position: "right" } } },
  });
  const agreement = Object.entries(data.agreement);
  new Chart(document.getElementById("chart-agreement"), {
    type: "doughnut",
    data: {
      labels: agreement.length ? agreement.map(([k]) => k) : ["no reviews yet"],
      datasets: [{ data: agreement.length ? agreement.map(([, v]) => v) : [1],
        backgroundColor: agreement.length ? agreement.map(([k]) => agreementColors[k] ?? colors.line) : ["#ddd"] }],
    },
    options: base,
  });
  new Chart(document.getElementById("chart-reasons"), {
    type: "bar",
    data: {
      labels: data.top_reasons.map(([r]) => data.reason_labels[r]),
      datasets: [{ label: "comments", data: data.top_reasons.map(([, n]) => n), backgroundColor: colors.hold }],
    },
    options: { ...base, indexAxis: "y", scales: { x: whole } },
  });
  box.dataset.drawn = "true";
}

if (box && window.Chart) draw();
