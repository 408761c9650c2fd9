// The demo page: upload an image to /v1/detect, draw the faces over it, filter them with the
// threshold slider (client side: the server is asked for everything above its floor), download JSON.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), slider = $("threshold"), download = $("download"), keyInput = $("api-key");
  const state = { result: null, image: null, name: null, floor: 0.05, downloadUrl: null };

  function setStatus(text) { $("status").textContent = text; }
  function showError(text) {
    const el = $("error");
    el.textContent = text || "";
    el.hidden = !text;
  }
  function shownFaces() {
    if (!state.result) return [];
    const thr = parseFloat(slider.value);
    return state.result.faces.filter((f) => f.score > thr);
  }
  // "page.jpg" -> "page.faces.json": the download is named after the image it describes.
  function jsonName(imageName) {
    const base = (imageName || "image").replace(/^.*[\\/]/, "");
    const dot = base.lastIndexOf(".");
    return `${dot > 0 ? base.slice(0, dot) : base}.faces.json`;
  }

  function clearResult() {
    state.result = null;
    state.image = null;
    state.name = null;
    canvas.hidden = true;
    canvas.width = 0;
    canvas.height = 0;
    if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
    state.downloadUrl = null;
    download.removeAttribute("href");
    download.setAttribute("download", "faces.json");
    download.setAttribute("aria-disabled", "true");
    draw();
  }

  function draw() {
    const faces = shownFaces();
    $("threshold-value").textContent = parseFloat(slider.value).toFixed(2);
    $("face-count").textContent = String(faces.length);
    const list = $("face-list");
    list.replaceChildren(...faces.map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.score.toFixed(2)}  [${f.box.map((v) => Math.round(v)).join(", ")}]`;
      return li;
    }));
    if (!state.image) return;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(state.image, 0, 0);
    const lw = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
    ctx.lineWidth = lw;
    ctx.font = `bold ${lw * 7}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    for (const f of faces) {
      const [x1, y1, x2, y2] = f.box;
      ctx.strokeStyle = "rgb(255, 0, 80)";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = f.score.toFixed(2);
      const tw = ctx.measureText(label).width + 2 * lw;
      const ty = y1 > lw * 9 ? y1 : y1 + lw * 9;
      ctx.fillStyle = "rgb(255, 0, 80)";
      ctx.fillRect(x1 - lw / 2, ty - lw * 8, tw, lw * 8);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x1 + lw / 2, ty - lw / 2);
    }
    if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
    const body = { ...state.result, faces, score_thr: parseFloat(slider.value) };
    state.downloadUrl = URL.createObjectURL(new Blob([JSON.stringify(body, null, 1)], { type: "application/json" }));
    download.href = state.downloadUrl;
    download.setAttribute("download", jsonName(state.name));
    download.setAttribute("aria-disabled", "false");
  }

  function loadImage(file) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser cannot display this image"));
      img.src = URL.createObjectURL(file);
    });
  }

  async function detect(file) {
    showError("");
    clearResult();  // a failure must not leave the previous image's faces beside its message
    setStatus(`Detecting faces in ${file.name}…`);
    const form = new FormData();
    form.append("file", file, file.name);
    const headers = {};
    if (keyInput && keyInput.value) {
      headers["X-API-Key"] = keyInput.value;
      sessionStorage.setItem("acfd-api-key", keyInput.value);
    }
    try {
      const response = await fetch(`/v1/detect?score_thr=${state.floor}`, { method: "POST", body: form, headers });
      const body = await response.json().catch(() => ({ detail: response.statusText }));
      if (!response.ok) {
        const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
        throw new Error(`${response.status}: ${detail}`);
      }
      const image = await loadImage(file);
      state.result = body;
      state.image = image;
      state.name = file.name;
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      canvas.hidden = false;
      setStatus(`${file.name}: ${body.image_size[0]}x${body.image_size[1]}, ${body.faces.length} faces above ${state.floor}, ${body.ms} ms (${body.model})`);
      draw();
    } catch (err) {
      clearResult();
      setStatus(`${file.name}: failed`);
      showError(err.message);
    }
  }

  const input = $("file-input");
  $("choose-file").addEventListener("click", () => input.click());
  input.addEventListener("change", (e) => {
    if (e.target.files[0]) detect(e.target.files[0]);
    e.target.value = "";  // choosing the same file again is a new upload
  });
  slider.addEventListener("input", draw);
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer.files[0]) detect(e.dataTransfer.files[0]);
  });
  if (keyInput) keyInput.value = sessionStorage.getItem("acfd-api-key") || "";

  fetch("/healthz").then((r) => r.json()).then((h) => {
    state.floor = h.min_score_thr;  // the slider's min and start value come rendered in the page
    $("model-name").textContent = `model ${h.model}`;
    draw();
  }).catch(() => showError("cannot reach the service (/healthz)"));

  window.acfdDemo = { state, shownFaces, jsonName };
})();
