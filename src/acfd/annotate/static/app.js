// acfd annotate: the question-and-answer page. Plain JS, no libraries (everything is served by the package).
//
// Each tab is its own session (SESSION): the question it shows is leased to it (renewed while shown,
// given back when the tab leaves the questions view or the page), and Undo takes back its own answers
// only. Answers carry the versions of the faces as shown; the server refuses them (409) when another
// answer changed a face meanwhile, and the page then shows the newer state.
"use strict";

const $ = (sel) => document.querySelector(sel);
const NAME_RE = /^[\p{L}\p{N}_ .@'-]{1,40}$/u;  // the server's rule: letters and digits of any script
const SESSION_RE = /^[A-Za-z0-9_-]{8,64}$/;
const SESSION_KEY = "acfd-session";
const RENEW_MS = 45000;    // the server leases a question for 120 s
let current = null;        // the question on screen
let busy = false;          // an answer is being sent
let inflight = null;       // the promise of the last answer / undo
let view = "questions";
let renewTimer = null;
let groupIndex = 0;        // the group the Groups view's keys act on

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);  // (crypto.randomUUID needs https; this works on any address)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The id lives in sessionStorage only while the page is away (reload, back/forward): a duplicated tab,
// which gets a copy of sessionStorage, finds none there and starts a session of its own.
function takeSession() {
  const saved = sessionStorage.getItem(SESSION_KEY);
  sessionStorage.removeItem(SESSION_KEY);
  return saved && SESSION_RE.test(saved) ? saved : randomId();
}
const SESSION = takeSession();

function annotator() {
  const box = $("#annotator");
  const v = box.value.trim().normalize("NFC");
  const ok = NAME_RE.test(v);
  box.classList.toggle("invalid", !ok);
  return ok ? v : null;
}

class NameError extends Error {}

function who() {
  const name = annotator();
  if (name === null) throw new NameError("Annotator name: 1 to 40 letters, digits, spaces or _ . @ ' - (nothing was sent).");
  return {annotator: name, session: SESSION};
}

function setBusy(value) {
  busy = value;
  document.body.dataset.busy = value ? "1" : "";  // for people's CSS and the browser tests
}

function status(text, isError, cropId) {
  $("#status-text").textContent = text || "";
  $("#status").className = isError ? "error" : "";
  const img = $("#status-crop");
  img.hidden = cropId === undefined;
  if (cropId !== undefined) img.src = `/crop/${cropId}.jpg`;
}

class ApiError extends Error {
  constructor(message, httpStatus, info) {
    super(message);
    this.httpStatus = httpStatus;
    this.code = info.code || null;
    this.info = info;
  }
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const d = data.detail;
    if (d && typeof d === "object" && !Array.isArray(d) && d.message) throw new ApiError(d.message, res.status, d);
    throw new ApiError(typeof d === "string" ? d : JSON.stringify(d || res.status), res.status, {});
  }
  return data;
}

function showMine(n) {
  $("#mine").textContent = n === null || n === undefined ? "" : `you: ${n} answer${n === 1 ? "" : "s"}`;
}

async function loadMine() {
  const name = annotator();
  if (name === null) { showMine(null); return; }
  const p = await api(`/api/progress?annotator=${encodeURIComponent(name)}`);
  showMine(p.mine);
}

function answerLabel(answer, name) {
  const words = {yes: "Yes", no: "No", not_face: "Not a face", skip: "Skip"}[answer] || answer;
  return name && (answer === "yes" || answer === "no") ? `${words}, ${name}` : words;
}

// Swap an image's source; hide it until the new one has loaded (its box keeps its size meanwhile),
// so a question never shows the previous question's picture.
function setImage(img, src) {
  if (img.getAttribute("src") === src && img.complete) return;
  img.classList.add("loading");
  img.onload = img.onerror = () => img.classList.remove("loading");
  img.src = src;
}

// ---- questions ---------------------------------------------------------------------------------

function stopRenewing() {
  if (renewTimer !== null) clearInterval(renewTimer);
  renewTimer = null;
}

async function renewLease() {
  if (!current || view !== "questions") return;
  try {
    await api("/api/lease", {...who(), face_id: current.face_id});
  } catch (err) {
    if (err.code === "lease_lost") {
      status(`Face ${current.face_id} was given to another browser while this tab was away; here is another question.`, true);
      await loadQuestion();
    }
  }
}

async function loadQuestion(prefer) {
  const q = await api("/api/question", {...who(), exclude: [], prefer: prefer ?? null});
  current = q.done ? null : q;
  stopRenewing();
  $("#question-box").hidden = q.done;
  $("#done").hidden = !q.done;
  document.body.dataset.faceId = q.done ? "" : String(q.face_id);
  if (q.done) {
    const open = q.progress.open_questions;
    status(open ? `${open} open question(s) are being answered in another browser.` : "All questions answered.");
    return;
  }
  renewTimer = setInterval(renewLease, RENEW_MS);
  $("#question").textContent = `Is this ${q.name}?`;
  setImage($("#crop"), `/crop/${q.face_id}.jpg`);
  setImage($("#frame"), `/frame/${q.face_id}.jpg`);
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
    const q = current;
    try {
      const r = await api("/api/answer", {
        ...who(), face_ids: [q.face_id], versions: [q.version], answer: kind,
        identity_id: q.identity_id, kind: "question",
      });
      showMine(r.mine);
      status(`Face ${q.face_id}: ${answerLabel(kind, q.name)}.`);
      await loadQuestion();
    } catch (err) {
      if (err.code === "stale") {
        status(`Not saved: ${err.message}. Here is the next question.`, true);
        await loadQuestion();
      } else {
        status(err instanceof NameError ? err.message : `Answer not saved: ${err.message}`, true);
      }
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
      const r = await api("/api/undo", who());
      showMine(r.mine);
      const u = r.undone;
      if (!u) {
        status("Nothing to undo in this tab.");
        await refresh();
        return;
      }
      const what = u.face_ids.length === 1 ? `face ${u.face_ids[0]}` : `${u.face_ids.length} crops`;
      status(`Undone: "${answerLabel(u.answer, u.name)}" for ${what} (${u.kind === "group" ? "group answer" : "question"}).`,
        false, u.face_ids[0]);
      if (view === "questions" && u.kind === "question") await loadQuestion(u.face_ids[0]);
      else await refresh();
    } catch (err) {
      status(err instanceof NameError ? err.message : `Undo failed: ${err.message}`, true);
    } finally {
      setBusy(false);
    }
  })();
  await inflight;
}

async function releaseQuestion() {
  stopRenewing();
  current = null;
  try { await api("/api/release", who()); } catch (err) { /* the lease runs out by itself */ }
}

// ---- groups ------------------------------------------------------------------------------------

function cards() { return [...document.querySelectorAll("#groups .group")]; }

function selectGroup(i, scroll) {
  const all = cards();
  if (!all.length) return;
  groupIndex = Math.max(0, Math.min(i, all.length - 1));
  all.forEach((c, k) => c.classList.toggle("current", k === groupIndex));
  if (scroll) all[groupIndex].scrollIntoView({block: "nearest"});
}

function groupCard(g, index) {
  const card = document.createElement("div");
  card.className = "group";
  card.dataset.key = g.key;
  card.addEventListener("click", () => selectGroup(index, false));
  const title = document.createElement("h3");
  title.textContent = g.kind === "candidate"
    ? `Candidate: ${g.name} (${g.size} crop${g.size === 1 ? "" : "s"})`
    : `Cluster ${g.cluster_id} (${g.size} unnamed crop${g.size === 1 ? "" : "s"})`;
  const grid = document.createElement("div");
  grid.className = "grid";
  const version = new Map(g.face_ids.map((id, k) => [id, g.versions[k]]));
  for (const id of g.face_ids) {
    const img = document.createElement("img");
    img.src = `/crop/${id}.jpg`;
    img.dataset.faceId = String(id);
    img.title = `face ${id}: click to leave it out`;
    img.addEventListener("click", () => img.classList.toggle("out"));
    grid.appendChild(img);
  }
  const selectAll = (on) => { for (const img of grid.querySelectorAll("img")) img.classList.toggle("out", !on); };
  const all = document.createElement("button");
  all.className = "select select-all";
  all.textContent = "All";
  all.title = "Select every crop (A)";
  all.addEventListener("click", () => selectAll(true));
  const none = document.createElement("button");
  none.className = "select select-none";
  none.textContent = "None";
  none.title = "Leave every crop out (X)";
  none.addEventListener("click", () => selectAll(false));
  title.append(all, none);
  const actions = document.createElement("div");
  actions.className = "actions";
  const name = document.createElement("input");
  name.setAttribute("list", "identity-names");
  name.placeholder = "name of this character";
  name.className = "group-name";
  name.maxLength = 100;
  if (g.name) name.value = g.name;
  const selected = () => [...grid.querySelectorAll("img:not(.out)")].map((i) => Number(i.dataset.faceId));
  const send = async (kind, createName) => {
    const ids = selected();
    if (!ids.length) { status("Every crop is left out: nothing to answer.", true); return; }
    let body;
    try {
      body = {...who(), face_ids: ids, versions: ids.map((id) => version.get(id)), answer: kind, kind: "group",
        create_name: Boolean(createName)};
    } catch (err) { status(err.message, true); return; }
    if (kind !== "not_face") {
      const n = name.value.trim();
      if (!n) { status("Type the character's name first.", true); name.focus(); return; }
      if (g.name && n === g.name) body.identity_id = g.identity_id; else body.name = n;
    }
    try {
      const r = await api("/api/answer", body);
      showMine(r.mine);
      status(`${ids.length} crop(s): ${answerLabel(kind, body.name || g.name)}.`);
      await loadGroups();
    } catch (err) {
      if (err.code === "new_name") {
        if (window.confirm(`${err.message}?`)) await send(kind, true);
        else status("Nothing saved: the name was not created.");
      } else if (err.code === "stale") {
        status(`Not saved: ${err.message}. The groups are reloaded: check and answer again.`, true);
        await loadGroups();
      } else {
        status(`Answer not saved: ${err.message}`, true);
      }
    }
  };
  card.answer = send;
  card.selectAll = selectAll;
  card.nameBox = name;
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
  else selectGroup(groupIndex, false);
}

function groupKey(key) {
  const card = cards()[groupIndex];
  if (key === "j" || key === "arrowdown") { selectGroup(groupIndex + 1, true); return true; }
  if (key === "k" || key === "arrowup") { selectGroup(groupIndex - 1, true); return true; }
  if (!card) return false;
  if (key === "a") { card.selectAll(true); return true; }
  if (key === "x") { card.selectAll(false); return true; }
  if (key === "e") { card.nameBox.focus(); return true; }
  const kinds = {y: "yes", n: "no", f: "not_face"};
  if (kinds[key] && (key !== "n" || card.querySelector(".group-no"))) { card.answer(kinds[key]); return true; }
  return false;
}

// ---- progress and names ------------------------------------------------------------------------

async function rename(row, merge) {
  const name = merge ? merge : window.prompt(`New name for ${row.name} (an existing name merges the two):`, row.name);
  if (name === null || !name.trim() || name.trim() === row.name) return;
  try {
    const r = await api("/api/names/rename", {...who(), identity_id: row.identity_id, name: name.trim(), merge: Boolean(merge)});
    status(r.merged ? `${row.name} merged into ${r.name}.` : `${row.name} renamed ${r.name}.`);
  } catch (err) {
    if (err.code === "merge" && window.confirm(`${err.message}?`)) { await rename(row, name.trim()); return; }
    status(err.code === "merge" ? "Nothing renamed." : `Not renamed: ${err.message}`, err.code !== "merge");
  }
  await loadProgress();
}

async function loadProgress() {
  const name = annotator();
  const p = await api(`/api/progress${name === null ? "" : `?annotator=${encodeURIComponent(name)}`}`);
  showMine(p.mine);
  $("#totals").textContent = `${p.reviewed} of ${p.representatives} crops reviewed · ${p.open_questions} open question(s)` +
    ` · ${p.unnamed} unnamed · ${p.not_face} not a face · answers given: ` +
    `${p.actions.question || 0} question(s), ${p.actions.group || 0} group answer(s)`;
  $("#progress-table tbody").replaceChildren(...p.identities.map((r) => {
    const tr = document.createElement("tr");
    for (const v of [r.name, r.confirmed, r.pending, r.rejected, r.references]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.className = "rename";
    b.textContent = "Rename…";
    b.addEventListener("click", () => rename(r));
    td.appendChild(b);
    tr.appendChild(td);
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
    status(err instanceof NameError ? err.message : `Cannot reach the server: ${err.message}`, true);
  }
}

function show(name) {
  if (view === "questions" && name !== "questions") releaseQuestion();
  if (name !== view) status("");
  view = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === name);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${name}`;
  refresh();
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.toLowerCase();
  if (key === "u") { ev.preventDefault(); undo(); return; }
  if (view === "groups") { if (groupKey(key)) ev.preventDefault(); return; }
  if (view !== "questions") return;
  const kinds = {y: "yes", n: "no", f: "not_face", s: "skip"};
  if (kinds[key]) { ev.preventDefault(); answer(kinds[key]); }
});

document.addEventListener("keydown", (ev) => {  // Escape leaves a name box, so the keys work again
  if (ev.key === "Escape" && ev.target instanceof HTMLInputElement) ev.target.blur();
});

// Leaving the page gives the question back and keeps the session id for a reload of this tab.
window.addEventListener("pagehide", () => {
  stopRenewing();
  sessionStorage.setItem(SESSION_KEY, SESSION);
  const name = annotator();
  const body = JSON.stringify({annotator: name === null ? "annotator" : name, session: SESSION});
  navigator.sendBeacon("/api/release", new Blob([body], {type: "application/json"}));
});
window.addEventListener("pageshow", (ev) => {
  if (!ev.persisted) return;  // back from the back/forward cache: this tab's session again
  sessionStorage.removeItem(SESSION_KEY);
  refresh();
});

for (const b of document.querySelectorAll(".answers button")) b.addEventListener("click", () => answer(b.dataset.answer));
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
$("#undo").addEventListener("click", undo);
$("#go-groups").addEventListener("click", (ev) => { ev.preventDefault(); show("groups"); });
const saved = localStorage.getItem("acfd-annotator");
if (saved) $("#annotator").value = saved;
$("#annotator").addEventListener("input", () => annotator());
$("#annotator").addEventListener("change", () => {
  const name = annotator();
  if (name === null) { status("Annotator name: 1 to 40 letters, digits, spaces or _ . @ ' -.", true); return; }
  localStorage.setItem("acfd-annotator", name);
  status("");
  loadMine().catch(() => {});
});
setBusy(false);
loadMine().catch(() => {});
show("questions");
