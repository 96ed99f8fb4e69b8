// The design system's behaviour on every page: confirm dialogs, toasts,
// dates in the reader's language and time zone, and the billing page's live
// balance. Pages work without it; it only improves them.

const lang = document.documentElement.lang || "en";

/// Shows a short message in the toast region (announced politely).
export function toast(text, kind = "ok") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const item = document.createElement("p");
  item.className = `toast ${kind}`;
  item.setAttribute("role", "status");
  item.textContent = text;
  region.append(item);
  setTimeout(() => item.remove(), 8000);
}

/// Asks in the page's confirm dialog; resolves to true when confirmed.
export function confirmDialog(message) {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog?.showModal) return Promise.resolve(window.confirm(message));
  dialog.querySelector("#confirm-text").textContent = message;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector('button[value="cancel"]').focus();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// Forms or their buttons with data-confirm ask first. Listening in the
// capture phase holds the submit back from every other handler until then.
document.addEventListener(
  "submit",
  async (event) => {
    const form = event.target;
    const message = event.submitter?.dataset.confirm ?? form.dataset.confirm;
    if (!message || form.dataset.confirmed) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (await confirmDialog(message)) {
      form.dataset.confirmed = "1";
      form.requestSubmit(event.submitter ?? undefined);
      delete form.dataset.confirmed;
    }
  },
  true,
);

// Times carry their instant; show them in the reader's zone and language.
const dateTime = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
const dateOnly = new Intl.DateTimeFormat(lang, { dateStyle: "medium" });
export function localTimes(root = document) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    const at = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    time.title = time.textContent;
    time.textContent = (time.dataset.format === "date" ? dateOnly : dateTime).format(at);
  }
}
localTimes();

// After a checkout the credits arrive with the provider's webhook: the
// balance updates in place when they do.
const balance = document.querySelector("[data-watch-balance]");
if (balance) {
  const numbers = new Intl.NumberFormat(lang);
  const initial = Number(balance.dataset.watchBalance);
  const poll = async (left) => {
    if (left === 0) return;
    try {
      const response = await fetch("/api/v1/billing", { headers: { accept: "application/json" } });
      if (response.ok) {
        const { balance: now } = await response.json();
        if (now.available !== initial) {
          for (const key of ["available", "held", "debt"]) {
            const cell = document.getElementById(`balance-${key}`);
            if (cell) cell.textContent = numbers.format(now[key]);
          }
          toast(balance.dataset.lArrived);
          return;
        }
      }
    } catch {
      // Offline for a moment: the next round tries again.
    }
    setTimeout(() => poll(left - 1), 2000);
  };
  setTimeout(() => poll(90), 2000);
}
