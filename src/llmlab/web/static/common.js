// Shared by the chat, notes and coach pages: the API key, authorised fetches, Markdown rendering.
"use strict";

const KEY_STORAGE = "llmlab.apiKey";

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders(extra) {
  const headers = Object.assign({ "Content-Type": "application/json" }, extra || {});
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

// The API-key dialog, shared by every page and built on first use.
function keyDialog() {
  let dialog = document.getElementById("key-dialog");
  if (dialog) return dialog;
  dialog = document.createElement("dialog");
  dialog.id = "key-dialog";
  dialog.setAttribute("aria-labelledby", "key-title");
  dialog.innerHTML =
    '<form id="key-form" method="dialog"><h2 id="key-title">API key</h2><p id="key-message"></p>' +
    '<label for="api-key">Key</label> <input id="api-key" type="password" autocomplete="off">' +
    '<div class="composer-actions"><button id="save-key" type="submit">Save key</button></div></form>';
  document.body.appendChild(dialog);
  return dialog;
}

// Ask for the key (once; it is kept in this browser) and resolve when one was saved.
function askForKey(message) {
  const dialog = keyDialog();
  document.getElementById("key-message").textContent = message;
  const input = document.getElementById("api-key");
  input.value = "";
  return new Promise((resolve) => {
    const form = document.getElementById("key-form");
    form.onsubmit = (event) => {
      event.preventDefault();
      localStorage.setItem(KEY_STORAGE, input.value.trim());
      dialog.close();
      resolve();
    };
    dialog.showModal();
    input.focus();
  });
}

// fetch() that asks for the API key on a 401 and retries; a wrong key says so plainly.
async function apiFetch(path, options) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const response = await fetch(path, Object.assign({}, options, { headers: authHeaders() }));
    if (response.status !== 401) return response;
    await askForKey(apiKey() ? "The API key was not accepted. Enter the right key." : "This server needs an API key.");
  }
  throw new Error("the API key was not accepted");
}

// An OpenAI error body → one readable line.
async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return body.error.message;
    if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON */ }
  return "HTTP " + response.status;
}

// Markdown → sanitised HTML (model output is untrusted: no raw HTML survives).
function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text || ""));
}

// A heading path ("基础知识点 > 归一化的作用") → the anchor id the notes page gives that heading.
function headingAnchor(heading) {
  const last = String(heading || "").split(">").pop().trim();
  return "h-" + Array.from(last).map((c) => (/[\p{L}\p{N}]/u.test(c) ? c : "-")).join("").replace(/-+/g, "-").replace(/^-|-$/g, "");
}

// Where a citation or search hit opens the notes: its first line when known, else its heading.
function citationHref(hit) {
  if (hit.lines && hit.lines.length) return "/notes#L" + hit.lines[0];
  return "/notes#" + headingAnchor(hit.heading);
}
