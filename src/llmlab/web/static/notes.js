// The notes browser: the repaired notes rendered with an anchor per heading and a search box
// backed by /v1/rag/search. Citations link here as /notes#L<line> (the first line of the cited
// passage, which the section's heading precedes) or /notes#<heading anchor> (common.js).
"use strict";

// 1-based line numbers of the Markdown headings (outside code fences), in document order.
function headingLines(source) {
  const lines = [];
  let fenced = false;
  source.split("\n").forEach((line, i) => {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    else if (!fenced && /^#{1,6}\s/.test(line)) lines.push(i + 1);
  });
  return lines;
}

function showTarget() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (!hash) return;
  let target = null;
  const line = /^L(\d+)$/.exec(hash);
  if (line) { // the last heading at or before that line: the section the passage sits in
    for (const heading of document.querySelectorAll("#notes [data-line]")) {
      if (Number(heading.dataset.line) <= Number(line[1])) target = heading;
    }
  } else {
    target = document.getElementById(hash);
  }
  document.querySelectorAll(".cited-target").forEach((e) => e.classList.remove("cited-target"));
  if (target) {
    target.classList.add("cited-target");
    target.scrollIntoView({ block: "start" });
  }
}

async function loadNotes() {
  const response = await fetch("/notes/source");
  const article = document.getElementById("notes");
  if (!response.ok) {
    article.textContent = "The notes could not be loaded: " + (await errorText(response));
    return;
  }
  const source = await response.text();
  article.innerHTML = renderMarkdown(source);
  const lines = headingLines(source);
  const headings = article.querySelectorAll("h1, h2, h3, h4, h5, h6");
  const seen = {};
  headings.forEach((heading, i) => {
    let id = headingAnchor(heading.textContent);
    seen[id] = (seen[id] || 0) + 1;
    if (seen[id] > 1) id += "-" + seen[id];
    heading.id = id;
    if (lines.length === headings.length) heading.dataset.line = lines[i];
  });
  showTarget();
}

window.addEventListener("hashchange", showTarget);

async function search(query) {
  const list = document.getElementById("search-results");
  const status = document.getElementById("status");
  list.innerHTML = "";
  status.textContent = "Searching…";
  try {
    const response = await apiFetch("/v1/rag/search", { method: "POST", body: JSON.stringify({ query: query, k: 5 }) });
    if (!response.ok) throw new Error(await errorText(response));
    const hits = (await response.json()).data;
    for (const hit of hits) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = citationHref(hit).replace("/notes", "");
      link.textContent = hit.heading;
      link.className = "result";
      const snippet = document.createElement("div");
      snippet.className = "hint";
      snippet.textContent = hit.text.slice(0, 160) + (hit.text.length > 160 ? "…" : "") + "  (score " + Number(hit.score).toFixed(3) + ")";
      item.append(link, snippet);
      list.appendChild(item);
    }
    status.textContent = hits.length ? "" : "No passage matches.";
  } catch (error) {
    status.textContent = "Search failed: " + error.message;
  }
}

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = document.getElementById("search").value.trim();
  if (query) search(query);
});
loadNotes();
