// Small behaviours on top of server-rendered pages; every page also works without them.
"use strict";

// Show a field only while its schema precondition holds (the server drops it otherwise anyway).
function fieldValue(form, name) {
  const input = form.elements.namedItem(name);
  if (!input) return undefined;
  if (input.type === "checkbox") return input.checked;
  return input.value;
}

function applyPreconditions(form) {
  for (const el of form.querySelectorAll("[data-when]")) {
    const conditions = JSON.parse(el.dataset.when);
    const holds = conditions.every(([name, expected]) => fieldValue(form, name) === expected);
    el.hidden = !holds;
  }
  // A field required while its precondition holds is marked required while it is shown.
  for (const input of form.querySelectorAll("[data-required]")) {
    const shown = !input.closest("[hidden]");
    if (shown) input.setAttribute("aria-required", "true");
    else input.removeAttribute("aria-required");
    const mark = form.querySelector(`label[for="${input.id}"] .required`);
    if (mark) mark.hidden = !shown;
  }
}

// A test export goes over HTTPS only: say so, and disable the button, while a URL is http.
function checkHttp(form) {
  const button = form.querySelector("[data-test-export]");
  const hint = form.querySelector("[data-http-hint]");
  if (!button || !hint) return;
  const urls = ["endpointDefinition.endpointUrl", "authentication.oAuth2.accessTokenUrl"].filter((name) => {
    const input = form.elements.namedItem(name);
    return input && !input.closest("[hidden]");
  });
  const plain = urls.some((name) => /^\s*http:\/\//i.test(fieldValue(form, name) || ""));
  button.disabled = plain;
  hint.hidden = !plain;
}

function refresh(form) {
  applyPreconditions(form);
  checkHttp(form);
}

// "Add another rule": a copy of the blank item with the next index in its names and ids.
function addItem(button) {
  const list = button.closest("[data-list]");
  const blank = list.querySelector("[data-blank-item]");
  const base = Number(blank.dataset.base); // the index of the blank item the page came with
  const index = Number(blank.dataset.next) + 1;
  const name = list.dataset.list;
  const copy = blank.firstElementChild.cloneNode(true);
  const swap = (text) =>
    text.split(`${name}[${base}]`).join(`${name}[${index}]`).split(`${name}-${base}`).join(`${name}-${index}`);
  for (const el of copy.querySelectorAll("[name], [id], [for], [aria-describedby]")) {
    for (const attr of ["name", "id", "for", "aria-describedby"]) {
      const value = el.getAttribute(attr);
      if (value) el.setAttribute(attr, swap(value));
    }
    if (el.matches("input[type=text], textarea")) el.value = "";
  }
  copy.id = swap(copy.id);
  const legend = copy.querySelector("legend");
  if (legend) legend.textContent = legend.textContent.replace(/\d+$/, String(index + 1));
  blank.dataset.next = String(index);
  blank.appendChild(copy);
  copy.querySelector("input[type=text], select")?.focus();
}

// Delivered sessions and failures per minute over the last hour (uPlot).
const charts = new Map();

async function drawChart(el) {
  // Asked for as htmx asks: once the login has ended, the answer names the login page to go to.
  const response = await fetch(el.dataset.chart, {
    credentials: "same-origin",
    headers: { "HX-Request": "true", "HX-Current-URL": window.location.href },
  });
  const login = response.headers.get("HX-Redirect");
  if (login) {
    window.location.assign(login);
    return;
  }
  if (!response.ok) return;
  const series = await response.json();
  const data = [series.t, series.delivered, series.failed];
  const existing = charts.get(el);
  if (existing) {
    existing.setData(data);
    return;
  }
  const width = Math.max(280, el.clientWidth);
  const chart = new uPlot(
    {
      width,
      height: 180,
      series: [
        { value: (u, ts) => (ts == null ? "--" : `${minuteOf(utc(ts))} UTC`) },
        { label: "delivered", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)" },
        { label: "failed", stroke: "#c62828" },
      ],
      tzDate: utc, // as every time on the page, in 24-hour time
      axes: [{ values: (u, splits) => splits.map((ts) => hourMinute(utc(ts))) }, { size: 60 }],
    },
    data,
    el,
  );
  charts.set(el, chart);
}

const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
const hourMinute = uPlot.fmtDate("{HH}:{mm}");
const minuteOf = uPlot.fmtDate("{YYYY}-{MM}-{DD} {HH}:{mm}");

function drawCharts() {
  for (const el of document.querySelectorAll("[data-chart]")) drawChart(el);
}

// A refusal (not allowed, form expired, conflict) comes as a short message: show it where the
// answer was to go. A login that ended comes as HX-Redirect, which htmx follows by itself.
document.addEventListener("htmx:beforeSwap", (event) => {
  const status = event.detail.xhr.status;
  if (status >= 400 && status < 500 && status !== 401) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

function sayInTarget(event, message) {
  const target = event.detail.target;
  if (!target) return;
  const p = document.createElement("p");
  p.className = "error";
  p.setAttribute("role", "alert");
  p.textContent = message;
  target.replaceChildren(p);
}

document.addEventListener("htmx:responseError", (event) => {
  if (event.detail.xhr.status >= 500) sayInTarget(event, `The server failed (HTTP ${event.detail.xhr.status}); try again.`);
});
document.addEventListener("htmx:sendError", (event) => sayInTarget(event, "The server could not be reached; try again."));

// A message about what was just done is read out first: a status already there at load is not.
// It keeps the part of the page the address points to in view. (After the load: going to the
// address's #part takes the focus away.)
window.addEventListener("load", () => {
  const flash = document.querySelector(".flash");
  if (flash && !document.querySelector("[autofocus]")) {
    flash.focus({ preventScroll: Boolean(window.location.hash) && !flash.closest(":target") });
  }
});

document.addEventListener("DOMContentLoaded", () => {
  if (window.htmx) {
    for (const button of document.querySelectorAll("[data-test-export]")) button.hidden = false;
  }
  for (const form of document.querySelectorAll("form")) {
    if (!form.querySelector("[data-when], [data-test-export]")) continue;
    refresh(form);
    form.addEventListener("input", () => refresh(form));
    form.addEventListener("change", () => refresh(form));
  }
  for (const button of document.querySelectorAll("[data-add-item]")) {
    button.hidden = false;
    button.addEventListener("click", () => addItem(button));
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (document.querySelector("[data-chart]") && window.uPlot) {
    for (const block of document.querySelectorAll("[data-chart-block]")) block.hidden = false;
    drawCharts();
    setInterval(drawCharts, 10000);
  }
});
