// The gallery: older pages load as the end of the grid scrolls into view
// (keyset pages from /api/v1/gallery), and "Save" keeps an image without
// leaving the page. Without this script the pager link and forms work.

const grid = document.getElementById("gallery-grid");
const more = document.getElementById("gallery-more");
const template = document.getElementById("tile-template");

const day = (ms) => new Date(ms).toISOString().slice(0, 10);
const stamp = (ms) => new Date(ms).toISOString().slice(0, 19).replace("T", " ");

/** A tile like the server renders, from the template and one JSON item. */
function tile(item) {
  const li = template.content.firstElementChild.cloneNode(true);
  li.dataset.id = item.id;
  li.querySelector('input[type="checkbox"]').value = item.id;
  li.querySelector("a").href = `/images/${item.id}`;
  const img = li.querySelector("img");
  img.src = item.thumbnail_url;
  img.alt = template.dataset.alt.replace("{date}", stamp(item.created_at));
  img.width = item.width;
  img.height = item.height;
  const keep = li.querySelector(".tile-save");
  if (item.kind === "output" && !item.saved && item.expires_at) {
    keep.action = `/images/${item.id}/save`;
    keep.querySelector(".expires").textContent = template.dataset.expires.replace("{date}", day(item.expires_at));
  } else {
    const note = document.createElement("small");
    note.className = item.kind === "output" ? "kept" : "kind";
    note.textContent = item.kind === "output" ? template.dataset.saved : template.dataset.upload;
    keep.replaceWith(note);
  }
  return li;
}

let loading = false;
async function loadMore() {
  if (loading || !more?.dataset.cursor) return;
  loading = true;
  try {
    const response = await fetch(`${more.dataset.api}&before=${encodeURIComponent(more.dataset.cursor)}`);
    if (!response.ok) return;
    const page = await response.json();
    grid.append(...page.items.map(tile));
    if (page.next_cursor) {
      more.dataset.cursor = page.next_cursor;
      more.href = more.href.replace(/before=[^&]*/, `before=${encodeURIComponent(page.next_cursor)}`);
    } else {
      more.closest(".pager").remove();
      delete more.dataset.cursor;
    }
  } finally {
    loading = false;
  }
  // A tall screen may still show the pager: keep going.
  if (more?.isConnected && more.getBoundingClientRect().top < window.innerHeight) loadMore();
}

if (more && grid && "IntersectionObserver" in window) {
  new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && loadMore(), { rootMargin: "400px" }).observe(more);
}

grid?.addEventListener("submit", async (event) => {
  const save = event.target.closest("form[data-save]");
  if (!save) return;
  event.preventDefault();
  const response = await fetch(save.action, { method: "POST", body: new URLSearchParams(new FormData(save)) });
  if (!response.ok) return save.submit();
  const note = document.createElement("small");
  note.className = "kept";
  note.textContent = template.dataset.saved;
  save.replaceWith(note);
});
