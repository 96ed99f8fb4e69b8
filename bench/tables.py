"""Turns the results of bench/run's platform benchmarks (JSON lines) into the
tables of bench/README.md; only the benchmarks present in the file are rewritten."""
import datetime
import json
import os
import platform
import sys

from report import sh, splice


def mib(kib):
    return f"{kib / 1024:.0f}"


def machine(rows):
    loads = [r["load"] for r in rows if "load" in r]
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    load = f"load average {min(loads):.1f}–{max(loads):.1f} during these runs" if loads else ""
    return (
        f"\nMeasured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/run`: {cpu}, "
        f"{os.cpu_count()} logical cores, {mem}, {platform.system()} {platform.release()}; {load} "
        f"(other builds shared the machine; see the notes)."
    )


def gateway(rows):
    by = {(r["system"], r["delay"], r["c"]): r for r in rows}
    out = []
    for delay in sorted({r["delay"] for r in rows}):
        out += [
            f"\n**Upstream delay {delay} ms** (added = gateway latency − the upstream's own at the same concurrency)\n",
            "| concurrency | upstream alone req/s · p50 / p99 ms | LiteLLM req/s · added p50 / p99 ms "
            "| Atelier SQLite req/s · added p50 / p99 ms | Atelier PostgreSQL req/s · added p50 / p99 ms "
            "| SQLite ÷ LiteLLM req/s (target ≥ 20×) | SQLite ÷ LiteLLM added p99 (target ≤ 0.1) | errors A-sqlite / A-pg / LiteLLM |",
            "|---:|---|---|---|---|---:|---:|---|",
        ]
        for c in sorted({r["c"] for r in rows if r["delay"] == delay}):
            base = by.get(("upstream", delay, c))
            if not base:
                continue

            def cell(system):
                r = by.get((system, delay, c))
                if not r:
                    return "–", None
                added = (r["p50_ms"] - base["p50_ms"], r["p99_ms"] - base["p99_ms"])
                return f"{r['rps']:,.0f} · {added[0]:+.1f} / {added[1]:+.1f}", (r, added)

            lite, a_sql, a_pg = cell("litellm"), cell("atelier-sqlite"), cell("atelier-postgres")
            ratio_rps = ratio_p99 = "–"
            if lite[1] and a_sql[1]:
                ratio_rps = f"{a_sql[1][0]['rps'] / lite[1][0]['rps']:.1f}×"
                ratio_p99 = f"{a_sql[1][1][1] / lite[1][1][1]:.2f}" if lite[1][1][1] > 0 else "–"
            errors = " / ".join(str(x[1][0]["errors"]) if x[1] else "–" for x in (a_sql, a_pg, lite))
            out.append(
                f"| {c} | {base['rps']:,.0f} · {base['p50_ms']:.1f} / {base['p99_ms']:.1f} | {lite[0]} | {a_sql[0]} | {a_pg[0]} "
                f"| {ratio_rps} | {ratio_p99} | {errors} |"
            )
    return "\n".join(out).lstrip("\n")


def inflight(rows):
    out = [
        "| backend | generations at once | succeeded | failed (status: count) | wall time s | RSS at start MiB | peak RSS MiB (target < 300) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        failed = ", ".join(f"{k}: {v}" for k, v in r["failed"].items()) or "none"
        out.append(
            f"| {r['system']} | {r['sent']:,} | {r['ok']:,} | {failed} | {r['seconds']:.1f} | {mib(r['rss_start_kib'])} | {mib(r['hwm_kib'])} |"
        )
    return "\n".join(out)


def serving(rows):
    by = {(r["system"], r["c"]): r for r in rows}
    out = [
        "| concurrency | nginx req/s · p50 / p99 ms · MiB/s | Atelier req/s · p50 / p99 ms · MiB/s | Atelier ÷ nginx req/s (target ≥ 0.5) | errors A / nginx |",
        "|---:|---|---|---:|---|",
    ]
    for c in sorted({r["c"] for r in rows}):
        n, a = by.get(("nginx", c)), by.get(("atelier-sqlite", c))
        if not (n and a):
            continue

        def cell(r):
            return f"{r['rps']:,.0f} · {r['p50_ms']:.1f} / {r['p99_ms']:.1f} · {r['bytes'] / r['seconds'] / 2**20:,.0f}"

        out.append(f"| {c} | {cell(n)} | {cell(a)} | {a['rps'] / n['rps']:.2f}× | {a['errors']} / {n['errors']} |")
    return "\n".join(out)


def privacy(rows):
    out = [
        "| backend | images | export (archive built, owner mailed) s | archive MiB | server peak RSS MiB before → after export (target < 100) "
        "| purge s (target < 10) | objects left |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        state = "" if r["export_status"] == "ready" else f" ({r['export_status']})"
        out.append(
            f"| {r['system']} | {r['images']:,} | {r['export_s']:.1f}{state} | {r['archive_bytes'] / 2**20:,.0f} "
            f"| {mib(r['hwm_before_kib'])} → {mib(r['hwm_kib'])} | {r['purge_s']:.1f} | {r['objects_left']} |"
        )
    return "\n".join(out)


def queue(rows):
    out = [
        "| backend | queued tasks | workers | claims/s (each claim then completed) | claimed | distinct | left queued | submits/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['system']} | {r['tasks']:,} | {r['workers']} | {r['claims_per_s']:,.0f} | {r['claimed']:,} | {r['distinct']:,} "
            f"| {r['left_queued']} | {r['submit_per_s']:,.0f} |"
        )
    return "\n".join(out)


def main():
    results, readme = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(results) if line.strip()]
    for name, table in [("gateway", gateway), ("inflight", inflight), ("serving", serving), ("privacy", privacy), ("queue", queue)]:
        mine = [r for r in rows if r["bench"] == name]
        if mine:
            section = table(mine) + "\n" + machine(mine)
            splice(readme, name, section)
            print(f"## {name}\n{section}\n")


if __name__ == "__main__":
    main()
