// healthspace study builder: code search, the policy check and the feasibility preview in
// place, and only the chosen analysis' parameters on show. The form works without it.
"use strict";

const JSON_HEADERS = { Accept: "application/json" };

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("builder");
  if (form) {
    showChosenAnalysis(form);
    for (const input of form.querySelectorAll("input[data-codesearch]")) searchCodes(form, input);
    suggestColumns(form);
    inPlace(form);
  }
  const running = document.querySelector("[data-status-url][data-terminal='false']");
  if (running) poll(running);
});

// Hide the parameter fieldsets that belong to other analyses.
function showChosenAnalysis(form) {
  const select = form.querySelector("select[data-analysis-select]");
  if (!select) return;
  for (const hint of form.querySelectorAll(".js-hide")) hint.hidden = true;
  const show = () => {
    for (const set of form.querySelectorAll("fieldset[data-for]")) {
      set.hidden = !set.dataset.for.split(" ").includes(select.value);
    }
  };
  select.addEventListener("change", show);
  show();
}

// Suggest published codes for the code being typed (the last one in the field).
function searchCodes(form, input) {
  const box = document.createElement("div");
  box.className = "suggest";
  box.setAttribute("aria-live", "polite");
  input.insertAdjacentElement("afterend", box);
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => suggest(form, input, box), 250);
  });
}

async function suggest(form, input, box) {
  const typed = input.value.split(/[\s,;]+/).pop();
  const asked = (box.asked = (box.asked || 0) + 1);
  box.replaceChildren();
  if (!typed || typed.length < 2) return;
  const query = new URLSearchParams({ q: typed });
  for (const node of form.querySelectorAll("input[name=nodes]:checked")) query.append("node", node.value);
  const response = await fetch(`${form.dataset.codesUrl}?${query}`, { headers: JSON_HEADERS });
  if (!response.ok || asked !== box.asked) return; // a later keystroke asked again
  const found = await response.json();
  if (asked !== box.asked) return;
  if (!found.codes.length) {
    box.textContent = form.dataset.noCodes;
    return;
  }
  for (const hit of found.codes) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = hit.code;
    button.title = hit.nodes.join(", ");
    button.addEventListener("click", () => {
      const parts = input.value.split(/([\s,;]+)/);
      parts[parts.length - 1] = hit.code;
      input.value = parts.join("") + ", ";
      box.replaceChildren();
      input.focus();
    });
    box.append(button);
  }
}

// "Check policy" and "Preview count" answer in place; on a problem the form is submitted
// as usual, so the server shows each message next to its field.
function inPlace(form) {
  let plain = false;
  form.addEventListener("submit", async (event) => {
    const button = event.submitter;
    if (plain || !button || !["check", "preview"].includes(button.value)) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    body.set("action", button.value);
    button.disabled = true;
    let answer = null;
    try {
      // getAttribute: the buttons named "action" shadow form.action.
      const response = await fetch(form.getAttribute("action"), { method: "POST", body, headers: JSON_HEADERS });
      if ((response.headers.get("content-type") || "").includes("json")) answer = await response.json();
    } catch (error) {
      answer = null;
    }
    button.disabled = false;
    if (!answer || !answer.ok) {
      plain = true;
      form.requestSubmit(button);
      return;
    }
    const target = document.getElementById(button.value === "check" ? "check-result" : "preview-result");
    target.innerHTML = answer.html;
    const preview = target.querySelector("[data-status-url]");
    if (preview && preview.dataset.terminal === "false") poll(preview);
  });
}

// Follow a running preview until every node has answered (at most about ten minutes).
function poll(element, delay = 1500, left = 60) {
  if (left <= 0) return;
  setTimeout(async () => {
    const response = await fetch(element.dataset.statusUrl, { headers: JSON_HEADERS });
    if (!response.ok) return;
    const answer = await response.json();
    const holder = document.createElement("div");
    holder.innerHTML = answer.html;
    const fresh = holder.firstElementChild;
    element.replaceWith(fresh);
    if (!answer.terminal) poll(fresh, Math.min(delay * 1.5, 15000), left - 1);
  }, delay);
}

// Suggest the chosen bundled dataset's columns in the column fields (every bundled
// dataset's columns when none or a pasted spec is chosen).
function suggestColumns(form) {
  const list = document.getElementById("dataset-columns");
  const select = form.querySelector("select[name=dataset_choice]");
  if (!list || !select) return;
  const byDataset = JSON.parse(list.dataset.columns || "{}");
  const every = [...new Set(Object.values(byDataset).flat())];
  const fill = () => {
    const columns = byDataset[select.value] || every;
    list.replaceChildren(...columns.map((name) => Object.assign(document.createElement("option"), { value: name })));
  };
  select.addEventListener("change", fill);
  fill();
}
