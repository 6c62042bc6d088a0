// The interview coach: a question from the notes, the answer graded against the reference
// answer's key points, feedback streamed from the served model, spaced repetition, progress.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the question on screen
let model = null; // the served model, which writes the feedback

async function call(path, body) {
  const options = body === undefined ? {} : { method: "POST", body: JSON.stringify(body) };
  const response = await apiFetch(path, options);
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

function list(id, items) {
  const ul = $(id);
  ul.innerHTML = "";
  for (const text of items.length ? items : ["(none)"]) {
    const li = document.createElement("li");
    li.textContent = text;
    ul.appendChild(li);
  }
}

async function loadProgress() {
  const body = await call("/v1/coach/progress");
  const rows = $("progress").querySelector("tbody");
  rows.innerHTML = "";
  for (const s of body.sections) {
    const tr = document.createElement("tr");
    for (const value of [s.section, s.questions, s.answered, Math.round(100 * s.mastery) + "%", s.due]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
}

async function nextQuestion() {
  $("status").textContent = "";
  try {
    const q = await call("/v1/coach/next", { section: $("section").value || null, exclude: current && current.id });
    current = q;
    $("question").textContent = q.question;
    $("question-source").textContent = q.source;
    $("answer").value = "";
    $("card").hidden = false;
    $("result").hidden = true;
    $("answer").focus();
  } catch (error) {
    $("status").textContent = "Could not pick a question: " + error.message;
  }
}

// The model's feedback, streamed from /v1/chat/completions with the messages the grader built.
async function streamFeedback(messages) {
  const box = $("feedback");
  box.textContent = "…";
  let text = "";
  try {
    const response = await apiFetch("/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ model: model, messages: messages, stream: true, max_tokens: 160, temperature: 0.3 }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data:\s*/, "").trim();
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        for (const choice of chunk.choices || []) text += (choice.delta && choice.delta.content) || "";
        box.innerHTML = renderMarkdown(text);
      }
    }
  } catch (error) {
    box.textContent = "(no model feedback: " + error.message + ")";
  }
}

async function grade() {
  const answer = $("answer").value.trim();
  if (!answer || !current) return;
  $("submit-answer").disabled = true;
  $("status").textContent = "Grading…";
  try {
    const r = await call("/v1/coach/grade", { question_id: current.id, answer: answer });
    $("score").textContent = r.score;
    $("next-review").textContent = new Date(r.next_review).toLocaleString();
    list("hit", r.hit);
    list("missed", r.missed);
    $("reference").innerHTML = renderMarkdown(r.reference_answer);
    $("section-link").href = citationHref({ lines: r.lines, heading: r.source });
    $("result").hidden = false;
    $("status").textContent = "";
    loadProgress();
    streamFeedback(r.feedback_messages);
  } catch (error) {
    $("status").textContent = "Could not grade: " + error.message;
  } finally {
    $("submit-answer").disabled = false;
  }
}

$("pick-form").addEventListener("submit", (event) => { event.preventDefault(); nextQuestion(); });
$("answer-form").addEventListener("submit", (event) => { event.preventDefault(); grade(); });
$("answer").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); grade(); }
});

(async () => {
  try {
    const models = await call("/v1/models");
    model = models.data.length ? models.data[0].id : null;
    const body = await call("/v1/coach/sections");
    for (const name of body.sections) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("section").appendChild(option);
    }
    await loadProgress();
  } catch (error) {
    $("status").textContent = "The coach is not available: " + error.message;
  }
})();
