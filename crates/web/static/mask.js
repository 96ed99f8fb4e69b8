// The mask painter of the generate page: paint over the image to edit where
// it should change. The mask it exports is a PNG of the image's size, opaque
// where the image stays and fully transparent where it was painted, which is
// what the edit API takes (alpha 0 = repaint).

const UNDO_DEPTH = 20;

export class MaskPainter {
  constructor(root) {
    this.canvas = root.querySelector("#mask-canvas");
    this.image = root.querySelector("#mask-image");
    this.size = root.querySelector("#mask-size");
    this.tools = root.querySelectorAll('input[name="mask-tool"]');
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.history = [];
    this.last = null;
    this.canvas.addEventListener("pointerdown", (e) => this.start(e));
    this.canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const end of ["pointerup", "pointercancel", "pointerleave"]) this.canvas.addEventListener(end, () => (this.last = null));
    root.querySelector("#mask-undo").addEventListener("click", () => this.undo());
    root.querySelector("#mask-clear").addEventListener("click", () => this.clear());
    root.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === "z") {
        e.preventDefault();
        this.undo();
      }
    });
  }

  /** Shows `url` (width × height pixels) with an empty mask. */
  load(url, width, height) {
    this.image.src = url;
    this.canvas.width = width;
    this.canvas.height = height;
    this.history = [];
  }

  tool() {
    return [...this.tools].find((t) => t.checked)?.value ?? "brush";
  }

  /** A pointer position in canvas pixels, and how many canvas pixels one CSS pixel is. */
  point(e) {
    const rect = this.canvas.getBoundingClientRect();
    const scale = this.canvas.width / rect.width;
    return { x: (e.clientX - rect.left) * scale, y: (e.clientY - rect.top) * scale, scale };
  }

  snapshot() {
    this.history.push(this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height));
    if (this.history.length > UNDO_DEPTH) this.history.shift();
  }

  start(e) {
    e.preventDefault();
    this.canvas.setPointerCapture?.(e.pointerId);
    this.snapshot();
    this.last = this.point(e);
    this.stroke(this.last, this.last);
  }

  move(e) {
    if (!this.last) return;
    const p = this.point(e);
    this.stroke(this.last, p);
    this.last = p;
  }

  stroke(from, to) {
    const c = this.ctx;
    c.globalCompositeOperation = this.tool() === "eraser" ? "destination-out" : "source-over";
    c.strokeStyle = "rgb(255, 0, 90)";
    c.lineCap = "round";
    c.lineJoin = "round";
    c.lineWidth = Number(this.size.value) * to.scale;
    c.beginPath();
    c.moveTo(from.x, from.y);
    c.lineTo(to.x + 0.01, to.y);
    c.stroke();
  }

  undo() {
    const previous = this.history.pop();
    if (previous) this.ctx.putImageData(previous, 0, 0);
  }

  clear() {
    this.snapshot();
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Whether anything is painted. */
  painted() {
    if (!this.canvas.width) return false;
    const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  }

  /** The mask as a PNG blob: opaque, with the painted area cut out. */
  maskBlob() {
    const out = document.createElement("canvas");
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const c = out.getContext("2d");
    c.fillStyle = "#000";
    c.fillRect(0, 0, out.width, out.height);
    c.globalCompositeOperation = "destination-out";
    c.drawImage(this.canvas, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }
}
