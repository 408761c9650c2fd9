// acfd annotate: the question-and-answer page. Plain JS, no libraries (everything is served by the package).
"use strict";

const $ = (sel) => document.querySelector(sel);
let current = null;      // the question on screen
let busy = false;        // an answer is being sent
let inflight = null;     // the promise of the last answer / undo
let view = "questions";

function annotator() {
  const v = $("#annotator").value.trim();
  return /^[\w .@-]{1,40}$/.test(v) ? v : "annotator";
}

function setBusy(value) {
  busy = value;
  document.body.dataset.busy = value ? "1" : "";  // for people's CSS and the browser tests
}

function status(text, isError) {
  const el = $("#status");
  el.textContent = text || "";
  el.className = isError ? "error" : "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || res.status);
    throw new Error(detail);
  }
  return data;
}

// ---- questions ---------------------------------------------------------------------------------

async function loadQuestion() {
  const q = await api(`/api/question?annotator=${encodeURIComponent(annotator())}`);
  current = q.done ? null : q;
  $("#question-box").hidden = q.done;
  $("#done").hidden = !q.done;
  document.body.dataset.faceId = q.done ? "" : String(q.face_id);
  if (q.done) {
    const open = q.progress.open_questions;
    status(open ? `${open} open question(s) are being answered in another browser.` : "All questions answered.");
    return;
  }
  $("#question").textContent = `Is this ${q.name}?`;
  $("#crop").src = `/crop/${q.face_id}.jpg`;
  $("#frame").src = `/frame/${q.face_id}.jpg`;
  $("#ref-name").textContent = q.name;
  const refs = $("#refs");
  refs.replaceChildren(...q.references.map((id) => {
    const img = document.createElement("img");
    img.src = `/reference/${id}.jpg`;
    img.alt = `reference of ${q.name}`;
    return img;
  }));
  if (!q.references.length) refs.textContent = "(no reference image: gallery embeddings only)";
  const where = q.frame_index === null ? q.source : `${q.source} (${q.timestamp.toFixed(1)} s)`;
  $("#info").textContent = `${where} · similarity ${q.similarity.toFixed(3)} · detection score ${q.score.toFixed(2)}` +
    ` · stands for ${q.duplicates} near-duplicate(s) · ${q.remaining} open question(s)`;
}

async function answer(kind) {
  // A key pressed while the previous answer is on its way is dropped: its question is not on screen yet.
  if (!current || busy) return;
  setBusy(true);
  inflight = (async () => {
    try {
      await api("/api/answer", {
        annotator: annotator(), face_ids: [current.face_id], answer: kind,
        identity_id: current.identity_id, kind: "question",
      });
      status(`Face ${current.face_id}: ${kind.replace("_", " ")}.`);
      await loadQuestion();
    } catch (err) {
      status(`Answer not saved: ${err.message}`, true);
    } finally {
      setBusy(false);
    }
  })();
  await inflight;
}

async function undo() {
  // Undo is never dropped: it waits for the answer being sent, then undoes it.
  if (inflight) await inflight;
  setBusy(true);
  inflight = (async () => {
    try {
      const r = await api("/api/undo", {annotator: annotator()});
      status(r.undone ? `Undone: your last answer (${r.undone.face_ids.length} face(s)).` : "Nothing to undo.");
      await refresh();
    } catch (err) {
      status(`Undo failed: ${err.message}`, true);
    } finally {
      setBusy(false);
    }
  })();
  await inflight;
}

// ---- groups ------------------------------------------------------------------------------------

function groupCard(g) {
  const card = document.createElement("div");
  card.className = "group";
  card.dataset.key = g.key;
  const title = document.createElement("h3");
  title.textContent = g.kind === "candidate"
    ? `Candidate: ${g.name} (${g.size} crop${g.size === 1 ? "" : "s"})`
    : `Cluster ${g.cluster_id} (${g.size} unnamed crop${g.size === 1 ? "" : "s"})`;
  const grid = document.createElement("div");
  grid.className = "grid";
  for (const id of g.face_ids) {
    const img = document.createElement("img");
    img.src = `/crop/${id}.jpg`;
    img.dataset.faceId = String(id);
    img.title = `face ${id}: click to leave it out`;
    img.addEventListener("click", () => img.classList.toggle("out"));
    grid.appendChild(img);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  const name = document.createElement("input");
  name.setAttribute("list", "identity-names");
  name.placeholder = "name of this character";
  name.className = "group-name";
  name.maxLength = 100;
  if (g.name) name.value = g.name;
  const selected = () => [...grid.querySelectorAll("img:not(.out)")].map((i) => Number(i.dataset.faceId));
  const send = async (kind) => {
    const ids = selected();
    if (!ids.length) { status("Every crop is left out: nothing to answer.", true); return; }
    const body = {annotator: annotator(), face_ids: ids, answer: kind, kind: "group"};
    if (kind !== "not_face") {
      const n = name.value.trim();
      if (!n) { status("Type the character's name first.", true); name.focus(); return; }
      if (g.name && n === g.name) body.identity_id = g.identity_id; else body.name = n;
    }
    try {
      await api("/api/answer", body);
      status(`${ids.length} crop(s): ${kind.replace("_", " ")}${body.name || g.name ? " " + (body.name || g.name) : ""}.`);
      await loadGroups();
    } catch (err) {
      status(`Answer not saved: ${err.message}`, true);
    }
  };
  const yes = document.createElement("button");
  yes.className = "yes group-yes";
  yes.textContent = "Yes, these are";
  yes.addEventListener("click", () => send("yes"));
  actions.append(yes, name);
  if (g.kind === "candidate") {
    const no = document.createElement("button");
    no.className = "no group-no";
    no.textContent = `No, not ${g.name}`;
    no.addEventListener("click", () => send("no"));
    actions.append(no);
  }
  const nf = document.createElement("button");
  nf.className = "group-not-face";
  nf.textContent = "Not faces";
  nf.addEventListener("click", () => send("not_face"));
  actions.append(nf);
  card.append(title, grid, actions);
  return card;
}

async function loadGroups() {
  const data = await api("/api/groups");
  $("#identity-names").replaceChildren(...data.identities.map((n) => {
    const o = document.createElement("option");
    o.value = n;
    return o;
  }));
  const box = $("#groups");
  box.replaceChildren(...data.groups.map(groupCard));
  if (!data.groups.length) box.textContent = "Every crop is reviewed.";
}

// ---- progress ----------------------------------------------------------------------------------

async function loadProgress() {
  const p = await api("/api/progress");
  $("#totals").textContent = `${p.reviewed} of ${p.representatives} crops reviewed · ${p.open_questions} open question(s)` +
    ` · ${p.unnamed} unnamed · ${p.not_face} not a face · answers given: ` +
    `${p.actions.question || 0} question(s), ${p.actions.group || 0} group answer(s)`;
  $("#progress-table tbody").replaceChildren(...p.identities.map((r) => {
    const tr = document.createElement("tr");
    for (const v of [r.name, r.confirmed, r.pending, r.rejected]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    return tr;
  }));
}

// ---- navigation --------------------------------------------------------------------------------

async function refresh() {
  try {
    if (view === "questions") await loadQuestion();
    else if (view === "groups") await loadGroups();
    else await loadProgress();
  } catch (err) {
    status(`Cannot reach the server: ${err.message}`, true);
  }
}

function show(name) {
  view = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === name);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${name}`;
  refresh();
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.toLowerCase();
  if (key === "u") { ev.preventDefault(); undo(); return; }
  if (view !== "questions") return;
  const kinds = {y: "yes", n: "no", f: "not_face", s: "skip"};
  if (kinds[key]) { ev.preventDefault(); answer(kinds[key]); }
});

for (const b of document.querySelectorAll(".answers button")) b.addEventListener("click", () => answer(b.dataset.answer));
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
$("#undo").addEventListener("click", undo);
$("#go-groups").addEventListener("click", (ev) => { ev.preventDefault(); show("groups"); });
const saved = localStorage.getItem("acfd-annotator");
if (saved) $("#annotator").value = saved;
$("#annotator").addEventListener("change", () => localStorage.setItem("acfd-annotator", annotator()));
setBusy(false);
show("questions");
