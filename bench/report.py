"""Turns the measurements of bench/run into the results section of bench/README.md."""
import datetime
import os
import platform
import re
import subprocess
import sys


def rows(path):
    out = {}
    for line in open(path):
        op, tool, median, low, size = line.rstrip("\n").split("\t")
        out[(op, tool)] = (float(median), float(low), int(size))
    return out


def splice(readme, name, section):
    """Replaces what stands between <!-- NAME:start --> and <!-- NAME:end --> in README."""
    text = open(readme).read()
    pattern = rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)"
    if not re.search(pattern, text, flags=re.S):
        raise SystemExit(f"{readme} has no {name} section")
    open(readme, "w").write(re.sub(pattern, lambda m: m.group(1) + section + m.group(2), text, flags=re.S))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"


def main():
    work, runs, readme = sys.argv[1], sys.argv[2], sys.argv[3]
    a, p = rows(f"{work}/atelier.tsv"), rows(f"{work}/peers.tsv")
    ops = [
        ("upscale", "(a) 1024² PNG → 4096² Lanczos3", "lanczos3", "pixels in memory"),
        ("thumbnail", "(b) 4096² JPEG → 384 px WebP q80", "shrink-on-load", "WebP bytes"),
        ("recode", "(c) 4096² JPEG decode + encode q85", "q85", "JPEG bytes"),
    ]
    lines = [
        "| operation | Atelier ms | libvips ms | Pillow ms | Atelier / libvips (target ≤ 1.0) | Pillow / Atelier (target ≥ 3) | output bytes A / V / P |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for op, label, variant, _ in ops:
        am, vm, pm = a[(op, variant)][0], p[(op, "vips")][0], p[(op, "pillow")][0]
        sizes = f"{a[(op, variant)][2]:,} / {p[(op, 'vips')][2]:,} / {p[(op, 'pillow')][2]:,}"
        lines.append(f"| {label} | {am:.1f} | {vm:.1f} | {pm:.1f} | {am / vm:.2f}× | {pm / am:.2f}× | {sizes} |")
    lines += ["", "Other Atelier variants (same inputs):", "", "| operation | variant | median ms | min ms |", "|---|---|---:|---:|"]
    for (op, variant), (m, low, _) in a.items():
        lines.append(f"| {op} | {variant} | {m:.1f} | {low:.1f} |")

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    pil = sh("python3 -c 'import PIL; print(PIL.__version__)'")
    pyv = sh("python3 -c 'import pyvips; print(pyvips.__version__)'")
    machine = [
        "",
        f"Measured {datetime.date.today().isoformat()} by `bench/run` (median of {runs} timed runs after one warm-up):",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; memory {mem}; {platform.system()} {platform.release()}",
        f"- {sh('rustc --version')}; libvips {sh('vips --version')}; Pillow {pil}; pyvips {pyv}; Python {platform.python_version()}",
    ]
    section = "\n".join(lines + machine)
    splice(readme, "results", section)
    print(section)


if __name__ == "__main__":
    main()
