#!/usr/bin/env python3
"""Draw the Grafana dashboard's layout (panel boxes and titles from their gridPos) as SVG:
tools/dashboard-layout.py > docs/images/dashboard-layout.svg"""
import json
import sys
from html import escape

dashboard = json.load(open("grafana/dashboards/power-monitord.json"))
col, row = 40, 22
panels = dashboard["panels"]
height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) * row
out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {24 * col} {height}" font-family="sans-serif" font-size="12">',
       f'<rect width="{24 * col}" height="{height}" fill="#181b1f"/>']
for p in panels:
    g = p["gridPos"]
    x, y, w, h = g["x"] * col, g["y"] * row, g["w"] * col, g["h"] * row
    title = escape(p.get("title", ""))
    if p["type"] == "row":
        out.append(f'<text x="{x + 6}" y="{y + 16}" fill="#ccccdc" font-weight="bold" font-size="14">{title}</text>')
        continue
    out.append(f'<rect x="{x + 3}" y="{y + 3}" width="{w - 6}" height="{h - 6}" rx="4" fill="#22252b" stroke="#34373d"/>')
    out.append(f'<text x="{x + 10}" y="{y + 20}" fill="#ccccdc">{title}</text>')
    out.append(f'<text x="{x + 10}" y="{y + 36}" fill="#8e8e8e" font-size="10">{escape(p["type"])}</text>')
out.append("</svg>")
sys.stdout.write("\n".join(out) + "\n")
