#!/usr/bin/env python3
"""Ratios of kiln to distribution from bench/registry/run.sh reports in one directory.

usage: ratios.py DIR   (reads kiln-*.md and distribution-*.md; medians over rounds)
"""
import glob
import os
import re
import statistics
import sys


def rows(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("workload", "---"):
            try:
                out[(cells[0], cells[1])] = float(cells[2])
            except ValueError:
                pass
    return out


def collect(d, who):
    merged = {}
    for f in sorted(glob.glob(os.path.join(d, f"{who}-*.md"))):
        for k, v in rows(f).items():
            merged.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in merged.items()}


def find(table, workload_prefix, measure_prefix):
    for (w, m), v in table.items():
        if w.startswith(workload_prefix) and m.startswith(measure_prefix):
            return v
    return None


def main():
    d = sys.argv[1]
    k, p = collect(d, "kiln"), collect(d, "distribution")
    # (what, workload, measure, better: "lower"/"higher", bar)
    checks = [
        ("big push: wall MB/s", "big", "push throughput", "higher", ">= 1.3x"),
        ("big push: registry CPU s", "big", "registry CPU per push", "lower", "<= 1/3"),
        ("big pull: wall MB/s", "big", "pull throughput", "higher", ">= 1.0x"),
        ("big pull: registry CPU s", "big", "registry CPU per pull", "lower", "<= 1/2"),
        ("many push: wall MB/s", "many", "push throughput", "higher", ""),
        ("many pull: wall MB/s", "many", "pull throughput", "higher", ""),
        ("manifest GET by tag (wrk)", "manifests", "GET manifest by tag", "higher", ">= 5x"),
        ("manifest HEAD by tag (ab)", "manifests", "HEAD manifest by tag", "higher", ">= 5x"),
        ("manifest GET by digest (wrk)", "manifests", "GET manifest by digest", "higher", ""),
        ("tags/list (wrk)", "manifests", "GET tags/list", "higher", ">= 5x"),
        ("manifest PUT by tag", "manifests", "manifest PUT by tag", "higher", ""),
        ("peak RSS MiB (big)", "big", "registry peak RSS", "lower", "<= 1/3"),
        ("peak RSS MiB (manifests)", "manifests", "registry peak RSS", "lower", "<= 1/3"),
    ]
    print("| measure | kiln | distribution | kiln / distribution | bar |")
    print("|---|---:|---:|---:|---|")
    for what, wl, measure, _better, bar in checks:
        a, b = find(k, wl, measure), find(p, wl, measure)
        ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
        print(f"| {what} | {a} | {b} | {ratio} | {bar} |")


main()
