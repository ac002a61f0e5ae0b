// forager view: small conveniences only; every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filter menus apply as soon as a value is picked.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // One button opens or closes every observation of a trajectory.
  const toggle = document.querySelector("button.toggle-all");
  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", () => {
      const all = document.querySelectorAll(".steps details.obs");
      const open = toggle.dataset.open !== "true";
      for (const details of all) details.open = open;
      toggle.dataset.open = String(open);
      toggle.textContent = open ? "collapse all observations" : "expand all observations";
    });
  }
  stepThroughTrace();
  // j / k move between steps.
  const steps = Array.from(document.querySelectorAll(".step"));
  if (steps.length) {
    document.addEventListener("keydown", (event) => {
      if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key !== "j" && event.key !== "k") return;
      const top = window.scrollY + 60;
      const index = steps.findIndex((step) => step.offsetTop > top + 1);
      const current = index === -1 ? steps.length : index;
      const target = event.key === "j" ? steps[Math.min(current, steps.length - 1)] : steps[Math.max(current - 2, 0)];
      window.location.hash = target.id;
    });
  }
});

// A trace page: one frame at a time, its line marked in the source, every local of the frame shown.
// The frames come from a JSON data block; every value is written with textContent (reprs are untrusted).
function stepThroughTrace() {
  const block = document.getElementById("trace-steps");
  const panel = document.querySelector(".trace-step");
  if (!block || !panel) return;
  const frames = JSON.parse(block.textContent);
  if (!frames.length) return;
  panel.hidden = false;
  const byId = (id) => document.getElementById(id);
  let current = -1;
  const show = (index, remember = true) => {
    index = Math.max(0, Math.min(frames.length - 1, index));
    if (index === current) return;
    for (const old of document.querySelectorAll(".src-line.current, tr.frame.current")) old.classList.remove("current");
    current = index;
    const frame = frames[index];
    const row = byId(`frame-${index}`);
    const line = byId(`L${frame.file}-${frame.line}`);
    row.classList.add("current");
    if (line) {
      line.classList.add("current");
      line.scrollIntoView({ block: "nearest" });
    }
    byId("step-count").textContent = `${index + 1} of ${frames.length}`;
    const event = byId("step-event");
    event.textContent = frame.event;
    event.className = `event ${frame.event}`;
    byId("step-where").textContent = row.querySelector("td.mono").textContent;
    byId("step-source").textContent = row.querySelector("td pre").textContent;
    const hasValue = frame.value !== null;
    byId("step-value-box").hidden = !hasValue;
    byId("step-value-label").textContent = frame.event === "return" ? "returns" : "raises";
    byId("step-value").textContent = hasValue ? frame.value : "";
    const body = byId("step-locals");
    body.replaceChildren();
    for (const [name, value] of frame.locals) {
      const tr = document.createElement("tr");
      if (frame.changed.includes(name)) tr.className = "changed";
      for (const text of [name, value]) {
        const td = document.createElement("td");
        const code = document.createElement("code");
        code.textContent = text;
        td.append(code);
        tr.append(td);
      }
      body.append(tr);
    }
    body.closest("table").hidden = !frame.locals.length;
    byId("step-no-locals").hidden = frame.locals.length > 0 || hasValue;
    // The address names the frame, to share; not on the first one shown (the browser would scroll to it).
    if (remember) history.replaceState(null, "", `#frame-${index}`);
  };
  byId("step-first").addEventListener("click", () => show(0));
  byId("step-prev").addEventListener("click", () => show(current - 1));
  byId("step-next").addEventListener("click", () => show(current + 1));
  byId("step-last").addEventListener("click", () => show(frames.length - 1));
  for (const row of document.querySelectorAll("tr.frame")) {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      show(Number(row.dataset.frame));
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const moves = { j: 1, ArrowRight: 1, k: -1, ArrowLeft: -1 };
    if (event.key in moves) show(current + moves[event.key]);
    else if (event.key === "Home") show(0);
    else if (event.key === "End") show(frames.length - 1);
    else return;
    event.preventDefault();
  });
  const named = () => /^#frame-(\d+)$/.exec(window.location.hash);
  window.addEventListener("hashchange", () => {
    const frame = named();
    if (frame) show(Number(frame[1]), false);
  });
  const start = named();
  show(start ? Number(start[1]) : 0, false);
}
