// The generate page: live price, reference images (drop, paste or pick),
// the mask painter for edits, and live progress with preview frames over the
// account's event stream. Without this script the form posts as usual.

import { MaskPainter } from "/static/mask.js";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const form = document.getElementById("generate-form");
const live = document.getElementById("live");
const references = document.getElementById("references");
const list = document.getElementById("reference-list");
const painterRoot = document.getElementById("mask-painter");
const painter = new MaskPainter(painterRoot);
const priceEl = document.getElementById("price");
const prices = form.dataset.prices ? JSON.parse(form.dataset.prices) : null;
const errors = JSON.parse(form.dataset.errors || "{}");
const submitButton = document.getElementById("generate-submit");
/** Uploaded reference images; the first is the one edited. */
const refs = [];
/** Task id → its card on the page. */
const jobs = new Map();
/** Events about tasks whose card is not there yet (the stream can be quicker than the submit's answer). */
const early = new Map();
const EARLY_TASKS = 32;

const PARTIAL_IMAGES = 2;
const POLL_MS = 4000;

function label(status) {
  return live.dataset[`l${status[0].toUpperCase()}${status.slice(1)}`] ?? status;
}

function messageOf(body) {
  const code = body?.error?.code;
  return errors[code] ?? body?.error?.message ?? errors.internal;
}

function api(url, body, contentType = "application/json") {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": contentType, "x-csrf-token": csrf, "idempotency-key": crypto.randomUUID() },
    body,
  });
}

// ---------------------------------------------------------------- price

/** The size a price is looked up for: an edit keeps its image's size. */
function priceSize(data) {
  if (!refs.length) return data.get("size");
  const { width, height } = refs[0];
  const label = `${width}x${height}`;
  return prices?.[form.dataset.model]?.[label] ? label : "1024x1024";
}

function updatePrice() {
  const data = new FormData(form);
  const n = Math.max(1, Number.parseInt(data.get("n"), 10) || 1);
  priceEl.hidden = false;
  if (!prices) {
    priceEl.textContent = priceEl.dataset.free;
    return;
  }
  const model = refs.length ? form.dataset.model : data.get("model");
  const quality = refs.length ? "standard" : data.get("quality");
  const each = prices[model]?.[priceSize(data)]?.[quality];
  if (each === undefined) {
    priceEl.hidden = true;
    return;
  }
  priceEl.textContent = priceEl.dataset.template.replace("{credits}", String(each * n));
}

form.addEventListener("input", updatePrice);
form.addEventListener("change", updatePrice);

// ---------------------------------------------------------------- references

function showReferences() {
  list.replaceChildren(
    ...refs.map((ref, i) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = ref.thumb;
      img.alt = "";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary small";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `${references.dataset.remove ?? "Remove"} ${i + 1}`);
      remove.addEventListener("click", () => {
        refs.splice(i, 1);
        showReferences();
      });
      li.append(img, remove);
      return li;
    }),
  );
  const editing = refs.length > 0;
  painterRoot.hidden = !editing;
  document.getElementById("edit-hint").hidden = !editing;
  // An edit keeps its image's size; the size and model pickers are for new images.
  for (const el of form.querySelectorAll('#size-picker input, select[name="model"], select[name="quality"]')) el.disabled = editing;
  if (editing && painter.source !== refs[0].id) {
    painter.source = refs[0].id;
    painter.load(refs[0].url, refs[0].width, refs[0].height);
  }
  updatePrice();
}

async function addFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const response = await api("/api/v1/uploads", file, file.type);
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      showError(messageOf(body));
      continue;
    }
    refs.push({ id: body.id, url: body.url, thumb: body.thumbnail_url || body.url, width: body.width, height: body.height });
  }
  showReferences();
}

references.hidden = false;
if (references.dataset.source) {
  const id = references.dataset.source;
  refs.push({
    id,
    url: `/api/v1/assets/${id}`,
    thumb: `/api/v1/assets/${id}`,
    width: Number(references.dataset.sourceWidth),
    height: Number(references.dataset.sourceHeight),
  });
  showReferences();
}

const dropzone = document.getElementById("dropzone");
const picker = document.getElementById("reference-file");
dropzone.addEventListener("dragover", (e) => {
  e.preventDefault();
  dropzone.classList.add("over");
});
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropzone.classList.remove("over");
  addFiles(e.dataTransfer.files);
});
dropzone.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    picker.click();
  }
});
picker.addEventListener("change", () => addFiles(picker.files));
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files ?? [])].filter((f) => f.type.startsWith("image/"));
  if (files.length) {
    e.preventDefault();
    addFiles(files);
  }
});

// ---------------------------------------------------------------- progress

function showError(text) {
  form.querySelector(".error[data-live]")?.remove();
  const p = document.createElement("p");
  p.className = "error";
  p.setAttribute("role", "alert");
  p.dataset.live = "";
  p.textContent = text;
  form.prepend(p);
}

/** A task's card: status, progress bar, preview frames, then the images. */
function track(task) {
  if (jobs.has(task.id)) return jobs.get(task.id);
  live.hidden = false;
  const card = document.createElement("article");
  card.className = "job";
  card.dataset.task = task.id;
  const status = document.createElement("p");
  status.className = "status";
  const bar = document.createElement("progress");
  bar.max = 100;
  const previews = document.createElement("div");
  previews.className = "previews";
  const results = document.createElement("div");
  results.className = "grid results";
  card.append(status, bar, previews, results);
  live.prepend(card);
  const job = {
    done: false,
    status(t) {
      status.textContent = label(t.status);
      bar.value = t.status === "succeeded" ? 100 : t.progress ?? 0;
    },
    partial(frame) {
      let img = previews.querySelector(`[data-index="${frame.image_index}"]`);
      if (!img) {
        img = document.createElement("img");
        img.dataset.index = frame.image_index;
        img.alt = live.dataset.preview;
        previews.append(img);
      }
      img.src = `data:image/png;base64,${frame.b64}`;
      img.width = frame.width;
      img.height = frame.height;
    },
    finish(t) {
      if (job.done) return;
      job.done = true;
      job.status(t);
      previews.remove();
      if (t.status !== "succeeded") {
        const p = document.createElement("p");
        p.className = "error";
        p.textContent = errors[t.error_code] ?? errors.internal;
        card.append(p);
      }
      results.replaceChildren(
        ...t.outputs.map((o) => {
          const a = document.createElement("a");
          a.href = `/images/${o.id}`;
          const img = document.createElement("img");
          img.src = o.thumbnail_url ?? o.url;
          img.alt = t.prompt;
          img.width = o.width;
          img.height = o.height;
          a.append(img);
          return a;
        }),
      );
      const open = document.createElement("a");
      open.href = `/tasks/${t.id}`;
      open.textContent = live.dataset.open;
      card.append(open);
    },
  };
  job.status(task);
  jobs.set(task.id, job);
  for (const [kind, data] of early.get(task.id) ?? []) job[kind](data);
  early.delete(task.id);
  // The stream is the fast path; a slow poll covers a dropped connection.
  const poll = async () => {
    if (job.done) return;
    const response = await fetch(`/api/v1/tasks/${task.id}`).catch(() => null);
    const t = response?.ok ? await response.json() : null;
    if (t && ["succeeded", "failed", "canceled"].includes(t.status)) job.finish(t);
    else setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
  return job;
}

/** Resolves once the account stream listens, so no frame of a new task is missed. */
const streamReady = new Promise((resolve) => {
  const source = new EventSource("/api/v1/events");
  source.addEventListener("ready", () => resolve());
  const deliver = (kind) => (e) => {
    const data = JSON.parse(e.data);
    const job = jobs.get(data.id);
    if (job) return job[kind](data);
    if (!early.has(data.id)) {
      if (early.size >= EARLY_TASKS) early.delete(early.keys().next().value);
      early.set(data.id, []);
    }
    early.get(data.id).push([kind, data]);
  };
  source.addEventListener("status", deliver("status"));
  source.addEventListener("partial", deliver("partial"));
  source.addEventListener("done", deliver("finish"));
  // Without the stream the poll still brings the result.
  setTimeout(resolve, POLL_MS);
});

// ---------------------------------------------------------------- submit

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const common = {
    prompt: data.get("prompt"),
    style: data.get("style") ?? "none",
    n: Number.parseInt(data.get("n"), 10) || 1,
    partial_images: PARTIAL_IMAGES,
  };
  submitButton.disabled = true;
  try {
    await streamReady;
    let response;
    if (refs.length) {
      const body = { ...common, references: refs.slice(1).map((r) => r.id) };
      if (painter.painted()) {
        const upload = await api("/api/v1/uploads", await painter.maskBlob(), "image/png");
        const uploaded = await upload.json();
        if (!upload.ok) return showError(messageOf(uploaded));
        body.mask = uploaded.id;
      }
      response = await api(`/api/v1/images/${refs[0].id}/edits`, JSON.stringify(body));
    } else {
      const body = { ...common, size: data.get("size"), quality: data.get("quality"), model: data.get("model") };
      response = await api("/api/v1/tasks", JSON.stringify(body));
    }
    const task = await response.json().catch(() => null);
    if (!response.ok) return showError(messageOf(task));
    form.querySelector(".error[data-live]")?.remove();
    track(task);
  } catch {
    showError(errors.unavailable);
  } finally {
    submitButton.disabled = false;
  }
});

updatePrice();
