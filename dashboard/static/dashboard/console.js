// The console: completion of command names, parameters and choices from
// GET /api/v1/commands/, a form generated from the typed command's params schema,
// and execution through POST /api/v1/commands/execute (as the API checks and audits
// it), showing the pointed error, the dry run's plan, or the run, live.
import { apiPost, live } from "./live.js";

const input = document.getElementById("console-text");
const list = document.getElementById("suggestions");
const form = document.getElementById("console-form");
const dry = document.getElementById("console-dry");
const generated = document.getElementById("console-generated");
const result = document.getElementById("console-result");
const runView = document.getElementById("console-run-view");
const commands = new Map();
let options = [];
let selected = -1;

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function propType(prop) {
  const type = prop.type ?? "string";
  return Array.isArray(type) ? type.find((t) => t !== "null") ?? "string" : type;
}

function describe(prop) {
  if (prop.enum) return prop.enum.join(" | ");
  const type = propType(prop);
  return prop.description || (prop.default !== undefined ? `${type}, default ${JSON.stringify(prop.default)}` : type);
}

function complete(text) {
  if (!text.startsWith("/")) return [];
  const space = text.indexOf(" ");
  if (space < 0) {
    const prefix = text.slice(1);
    return [...commands.values()].filter((c) => c.name.startsWith(prefix)).map((c) => ({
      value: `/${c.name} `, label: `/${c.name}`, hint: `${c.argument_hint} ${c.description}`.trim(),
    }));
  }
  const command = commands.get(text.slice(1, space));
  if (!command) return [];
  const props = command.params?.properties ?? {};
  const cut = text.lastIndexOf(" ") + 1;
  const before = text.slice(0, cut);
  const word = text.slice(cut);
  const eq = word.indexOf("=");
  if (eq >= 0) {
    const key = word.slice(0, eq);
    const choices = props[key]?.enum ?? (propType(props[key] ?? {}) === "boolean" ? [true, false] : []);
    return choices.filter((v) => String(v).startsWith(word.slice(eq + 1))).map((v) => ({
      value: `${before}${key}=${v} `, label: `${key}=${v}`, hint: "",
    }));
  }
  const used = new Set(text.slice(space + 1).split(/\s+/).map((w) => w.replace(/^--(no-)?/, "").split("=")[0]));
  return Object.entries(props).filter(([key]) => !used.has(key) && key.startsWith(word.replace(/^--/, "")))
    .map(([key, prop]) => {
      const flag = propType(prop) === "boolean";
      return { value: `${before}${flag ? `--${key} ` : `${key}=`}`, label: flag ? `--${key}` : `${key}=`, hint: describe(prop) };
    });
}

function show() {
  options = complete(input.value);
  selected = options.length ? 0 : -1;
  list.innerHTML = options.map((o, i) => `<li role="option" data-suggestion="${escapeHtml(o.value)}" aria-selected="${i === selected}">${escapeHtml(o.label)}<small>${escapeHtml(o.hint)}</small></li>`).join("");
  list.hidden = !options.length;
  renderForm();
}

function accept(index) {
  if (index < 0 || index >= options.length) return false;
  input.value = options[index].value;
  input.focus();
  show();
  return true;
}

function moveSelection(step) {
  if (!options.length) return;
  selected = (selected + step + options.length) % options.length;
  list.querySelectorAll("li").forEach((li, i) => li.setAttribute("aria-selected", String(i === selected)));
}

input.addEventListener("input", show);
input.addEventListener("focus", show);
input.addEventListener("blur", () => setTimeout(() => { list.hidden = true; }, 150));
input.addEventListener("keydown", (key) => {
  if (list.hidden) return;
  if (key.key === "ArrowDown") { moveSelection(1); key.preventDefault(); }
  else if (key.key === "ArrowUp") { moveSelection(-1); key.preventDefault(); }
  else if (key.key === "Tab" && accept(selected)) key.preventDefault();
  else if (key.key === "Escape") list.hidden = true;
});
list.addEventListener("mousedown", (press) => {
  const item = press.target.closest("li[data-suggestion]");
  if (item) { press.preventDefault(); accept([...list.children].indexOf(item)); }
});

// The form of the typed command, from its params schema; editing it writes the text
// (values quoted, as the server's form does), so the text is always what runs.
let formFor = null;
function renderForm() {
  const name = /^\/(\S+)/.exec(input.value)?.[1];
  const command = commands.get(name);
  if (!command) { generated.hidden = true; formFor = null; return; }
  if (formFor === name) return;
  formFor = name;
  const props = command.params?.properties ?? {};
  const required = new Set(command.params?.required ?? []);
  generated.innerHTML = Object.entries(props).map(([key, prop]) => {
    const type = propType(prop);
    const star = required.has(key) ? " *" : "";
    const dflt = prop.default === undefined ? "" : Array.isArray(prop.default) ? prop.default.join(",") : prop.default;
    let field;
    if (prop.enum) {
      field = `<select name="${escapeHtml(key)}"><option value=""></option>${prop.enum.map((v) => `<option${v === prop.default ? " selected" : ""}>${escapeHtml(v)}</option>`).join("")}</select>`;
    } else if (type === "boolean") {
      field = `<input type="checkbox" name="${escapeHtml(key)}"${prop.default ? " checked" : ""}>`;
    } else {
      const kind = type === "integer" || type === "number" ? "number" : "text";
      field = `<input type="${kind}" name="${escapeHtml(key)}" value="${escapeHtml(dflt)}"${type === "array" ? ' placeholder="a,b,c"' : ""}>`;
    }
    return `<label data-param="${escapeHtml(key)}">${escapeHtml(key)}${star} ${field}<small>${escapeHtml(prop.description ?? "")}</small></label>`;
  }).join("") + `<p class="muted">/${escapeHtml(name)}: ${escapeHtml(command.description)}</p>`;
  generated.hidden = !Object.keys(props).length;
}

generated.addEventListener("input", () => {
  const words = [`/${formFor}`];
  for (const field of generated.elements) {
    if (field.type === "checkbox") { if (field.checked) words.push(`--${field.name}`); continue; }
    if (field.value === "") continue;
    words.push(`${field.name}="${field.value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`);
  }
  input.value = words.join(" ");
});

function showResult(html) { result.innerHTML = html; }

form.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  list.hidden = true;
  const dryRun = dry.checked;
  const response = await apiPost("/api/v1/commands/execute", { text: input.value, dry_run: dryRun, source: "dashboard" });
  if (!response.ok) {
    const error = response.data?.error ?? { code: `HTTP ${response.status}`, message: "", fields: {} };
    const pointed = error.fields?.text?.[0] ?? error.message;
    showResult(`<div class="result error" data-code="${escapeHtml(error.code)}"><strong>${escapeHtml(error.code)}</strong><pre>${escapeHtml(pointed)}</pre></div>`);
    return;
  }
  const { invocation, run, plan } = response.data;
  if (dryRun) {
    showResult(`<div class="result ok" data-outcome="${escapeHtml(invocation.outcome)}"><strong>${escapeHtml(invocation.outcome)}</strong> (dry run: nothing started)<pre data-plan>${escapeHtml(JSON.stringify(plan, null, 2))}</pre></div>`);
    return;
  }
  const message = invocation.output?.message ?? (invocation.output ? JSON.stringify(invocation.output, null, 2) : "");
  const runLink = run ? `: <a href="/runs/${run.id}/" data-run-link="${run.id}">run ${run.id}</a> of ${escapeHtml(run.workflow)}` : "";
  showResult(`<div class="result ok" data-outcome="${escapeHtml(invocation.outcome)}"><strong>${escapeHtml(invocation.outcome)}</strong> invocation ${invocation.id}${runLink}${invocation.error ? `: ${escapeHtml(invocation.error)}` : ""}${message ? `<pre>${escapeHtml(message)}</pre>` : ""}</div>`);
  if (run) {
    // The run, live, right here: its events refresh it as they come.
    const view = document.createElement("div");
    runView.replaceChildren(view);
    live.watch(`run:${run.id}`);
    live.region(view, `/runs/${run.id}/?partial=1`, [`run:${run.id}`]).refresh();
  }
});

const response = await fetch("/api/v1/commands/?limit=1000", { credentials: "same-origin" });
if (response.ok) for (const command of (await response.json()).results) commands.set(command.name, command);
document.body.dataset.consoleReady = "1";
if (document.activeElement === input) show();
