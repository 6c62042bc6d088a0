// The chat page: conversations kept in this browser, answers streamed over SSE from
// /v1/chat/completions, a stop button, Markdown, tool calls and RAG citations, tokens/s.
"use strict";

const STORE = "llmlab.conversations";
const CURRENT = "llmlab.current";
const $ = (id) => document.getElementById(id);

let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
let current = localStorage.getItem(CURRENT);
let controller = null; // the AbortController of the answer being streamed

// The tool offered when "Tools" is set: the model answers with an OpenAI tool call the page shows.
const CALCULATOR = {
  type: "function",
  function: {
    name: "calculator",
    description: "Evaluate an arithmetic expression, e.g. 12 * (3 + 4).",
    parameters: { type: "object", properties: { expression: { type: "string" } }, required: ["expression"], additionalProperties: false },
  },
};

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations));
  if (current) localStorage.setItem(CURRENT, current);
}

function conversation() {
  return conversations.find((c) => c.id === current);
}

function newConversation() {
  const c = { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "New conversation", created: new Date().toISOString(), messages: [] };
  conversations.unshift(c);
  current = c.id;
  save();
  renderAll();
  $("prompt").focus();
}

function renderList() {
  const list = $("conversation-list");
  list.innerHTML = "";
  for (const c of conversations) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = c.title;
    button.className = "conversation" + (c.id === current ? " active" : "");
    if (c.id === current) button.setAttribute("aria-current", "true");
    button.onclick = () => { current = c.id; save(); renderAll(); };
    item.appendChild(button);
    list.appendChild(item);
  }
}

function messageElement(message) {
  const box = document.createElement("article");
  box.className = "message " + message.role;
  const who = document.createElement("div");
  who.className = "role";
  who.textContent = message.role === "user" ? "You" : "Assistant";
  box.appendChild(who);
  const body = document.createElement("div");
  body.className = "content";
  if (message.role === "assistant") body.innerHTML = renderMarkdown(message.content);
  else body.textContent = message.content;
  box.appendChild(body);
  for (const call of message.tool_calls || []) {
    const tool = document.createElement("div");
    tool.className = "tool-call";
    tool.textContent = "tool call: " + (call.function.name || "?") + "(" + (call.function.arguments || "") + ")";
    box.appendChild(tool);
  }
  if (message.citations && message.citations.length) {
    const cites = document.createElement("ol");
    cites.className = "citations";
    cites.setAttribute("aria-label", "citations");
    message.citations.forEach((c, i) => {
      const li = document.createElement("li");
      li.value = c.number || c.n || i + 1;
      const a = document.createElement("a");
      a.href = citationHref(c);
      a.textContent = c.heading || c.id || "source";
      a.className = "citation";
      li.appendChild(a);
      cites.appendChild(li);
    });
    box.appendChild(cites);
  }
  if (message.stopped) {
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = "(stopped)";
    box.appendChild(note);
  }
  if (message.error) {
    const note = document.createElement("div");
    note.className = "error";
    note.setAttribute("role", "alert");
    note.textContent = "Error: " + message.error;
    box.appendChild(note);
  }
  return box;
}

function renderMessages() {
  const area = $("messages");
  area.innerHTML = "";
  const c = conversation();
  for (const message of c ? c.messages : []) area.appendChild(messageElement(message));
  area.scrollTop = area.scrollHeight;
}

function renderAll() {
  if (!conversation()) {
    if (conversations.length) current = conversations[0].id;
    else return newConversation();
  }
  renderList();
  renderMessages();
}

async function loadModels() {
  const select = $("model");
  try {
    const response = await apiFetch("/v1/models");
    if (!response.ok) throw new Error(await errorText(response));
    const body = await response.json();
    select.innerHTML = "";
    for (const m of body.data) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.id;
      select.appendChild(option);
    }
    const wanted = localStorage.getItem("llmlab.model");
    if (wanted && body.data.some((m) => m.id === wanted)) select.value = wanted;
    $("forget-key").hidden = !apiKey();
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = "Could not list models: " + error.message;
  }
}

function requestMessages(c) {
  const out = [];
  const system = $("system-prompt").value.trim();
  if (system) out.push({ role: "system", content: system });
  for (const m of c.messages) {
    if (m.error && !m.content) continue;
    out.push({ role: m.role, content: m.content });
  }
  return out;
}

// Read an SSE body, calling onEvent(parsed JSON) for every `data:` line until [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  const c = conversation();
  if (!text.trim() || controller) return;
  if (c.messages.length === 0) c.title = text.trim().slice(0, 40);
  c.messages.push({ role: "user", content: text });
  const answer = { role: "assistant", content: "" };
  const body = {
    model: $("model").value || undefined,
    messages: requestMessages(c),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  if ($("use-rag").checked) body.rag = true;
  if ($("tools").value !== "none") {
    body.tools = [CALCULATOR];
    body.tool_choice = $("tools").value;
  }
  c.messages.push(answer);
  save();
  renderAll();
  const area = $("messages");
  let live = area.lastElementChild; // the answer's element, replaced as the text grows
  controller = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  $("status").textContent = "Answering…";
  let firstToken = null;
  let pieces = 0;
  let usageTokens = null;
  const calls = [];
  const update = () => {
    const fresh = messageElement(answer);
    live.replaceWith(fresh);
    live = fresh;
    fresh.scrollIntoView({ block: "end" });
  };
  try {
    const response = await apiFetch("/v1/chat/completions", { method: "POST", body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) throw new Error(await errorText(response));
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
      if (chunk.citations) answer.citations = chunk.citations;
      if (chunk.usage) usageTokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.content) {
          firstToken = firstToken || performance.now();
          pieces += 1;
          answer.content += delta.content;
        }
        for (const part of delta.tool_calls || []) {
          const call = (calls[part.index] = calls[part.index] || { id: part.id, function: { name: "", arguments: "" } });
          if (part.function && part.function.name) call.function.name = part.function.name;
          if (part.function && part.function.arguments) call.function.arguments += part.function.arguments;
          answer.tool_calls = calls.filter(Boolean);
        }
        if (delta.citations) answer.citations = delta.citations;
      }
      update();
      if (firstToken) {
        const seconds = (performance.now() - firstToken) / 1000;
        $("speed").textContent = seconds > 0 ? (pieces / seconds).toFixed(1) + " tokens/s" : "";
      }
    });
    if (usageTokens && firstToken) {
      const seconds = (performance.now() - firstToken) / 1000;
      if (seconds > 0) $("speed").textContent = (usageTokens / seconds).toFixed(1) + " tokens/s (" + usageTokens + " tokens)";
    }
    $("status").textContent = "";
  } catch (error) {
    if (error.name === "AbortError") {
      answer.stopped = true;
      $("status").textContent = "Stopped.";
    } else {
      answer.error = error.message;
      $("status").textContent = "";
    }
  } finally {
    controller = null;
    $("stop").disabled = true;
    $("send").disabled = false;
    save();
    update();
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-conversation").addEventListener("click", newConversation);
$("rename-conversation").addEventListener("click", () => {
  const c = conversation();
  const title = prompt("Rename conversation", c.title);
  if (title && title.trim()) { c.title = title.trim(); save(); renderList(); }
});
$("delete-conversation").addEventListener("click", () => {
  if (!confirm("Delete this conversation?")) return;
  conversations = conversations.filter((c) => c.id !== current);
  current = null;
  save();
  renderAll();
});
$("export-conversations").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(conversations, null, 2)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "llmlab-conversations.json";
  link.click();
  URL.revokeObjectURL(link.href);
});
$("model").addEventListener("change", () => localStorage.setItem("llmlab.model", $("model").value));
$("forget-key").addEventListener("click", () => { localStorage.removeItem(KEY_STORAGE); loadModels(); });

renderAll();
loadModels();
