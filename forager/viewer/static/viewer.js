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
