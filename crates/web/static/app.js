// Progressive enhancement for Atelier's pages: every form also works without
// this script. Loaded as a module (CSP allows only same-origin scripts).

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

for (const area of document.querySelectorAll("textarea[data-counter]")) {
  const counter = document.getElementById(area.dataset.counter);
  const update = () => (counter.textContent = [...area.value].length);
  area.addEventListener("input", update);
  update();
}

// Page-specific modules, loaded only where their page is.
if (document.getElementById("generate-form")) import("/static/generate.js");
if (document.getElementById("bulk")) import("/static/gallery.js");

const taskCard = document.querySelector("[data-watch]");
if (taskCard) {
  watchTask(taskCard.dataset.watch, taskCard, () => window.location.reload());
}
