// Progressive enhancement for Atelier's pages: every form also works without
// this script. Loaded as a module (CSP allows only same-origin scripts).

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function label(el, status) {
  return el.dataset[`l${status[0].toUpperCase()}${status.slice(1)}`] ?? status;
}

function watchTask(id, el, onDone) {
  const status = el.querySelector(".status");
  const bar = el.querySelector("progress");
  const source = new EventSource(`/api/v1/tasks/${id}/events`);
  const show = (task) => {
    if (status) status.textContent = label(el, task.status);
    if (bar) bar.value = task.status === "succeeded" ? 100 : task.progress ?? 0;
  };
  source.addEventListener("status", (e) => show(JSON.parse(e.data)));
  source.addEventListener("done", (e) => {
    source.close();
    const task = JSON.parse(e.data);
    show(task);
    onDone(task);
  });
  source.onerror = () => {
    // The browser reconnects by itself; a closed stream after "done" is expected.
  };
}

function showOutputs(container, task) {
  container.replaceChildren(
    ...task.outputs.map((o) => {
      const a = document.createElement("a");
      a.href = `/images/${o.id}`;
      const img = document.createElement("img");
      img.src = o.thumbnail_url ?? o.url;
      img.alt = task.prompt;
      img.width = o.width;
      img.height = o.height;
      a.append(img);
      return a;
    }),
  );
}

for (const area of document.querySelectorAll("textarea[data-counter]")) {
  const counter = document.getElementById(area.dataset.counter);
  const update = () => (counter.textContent = [...area.value].length);
  area.addEventListener("input", update);
  update();
}

const form = document.getElementById("generate-form");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const live = document.getElementById("live");
    const button = form.querySelector("button");
    const data = new FormData(form);
    button.disabled = true;
    try {
      const response = await fetch("/api/v1/tasks", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": csrf, "idempotency-key": crypto.randomUUID() },
        body: JSON.stringify({ prompt: data.get("prompt"), size: data.get("size"), style: data.get("style") }),
      });
      if (!response.ok) {
        // Let the server render the translated error on the classic path.
        HTMLFormElement.prototype.submit.call(form);
        return;
      }
      const task = await response.json();
      live.hidden = false;
      live.querySelector(".results").replaceChildren();
      watchTask(task.id, live, (done) => {
        showOutputs(live.querySelector(".results"), done);
        button.disabled = false;
      });
    } catch {
      button.disabled = false;
    }
  });
}

const taskCard = document.querySelector("[data-watch]");
if (taskCard) {
  watchTask(taskCard.dataset.watch, taskCard, () => window.location.reload());
}

for (const confirmForm of document.querySelectorAll("form[data-confirm]")) {
  confirmForm.addEventListener("submit", (event) => {
    if (!window.confirm(confirmForm.dataset.confirm)) event.preventDefault();
  });
}
