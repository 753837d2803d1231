#!/usr/bin/env bash
# Checks the Grafana dashboard ops/grafana/ltvboost-webhooks.json against
# Prometheus and against src/metrics/ (the names, their types and the
# closed label sets) and the status table in src/receiver/outcome.rs:
#
#   bash ops/grafana/check.sh            # from anywhere; exits non-zero on any failure
#   DASHBOARD=/tmp/copy.json bash ops/grafana/check.sh   # check another copy
#
# 1. Every panel has at least one target, a unit, and the `${datasource}`
#    data source (no hard-coded UID); every `ltvboost_…` name a query uses is
#    a series the exporter writes for a metric of src/metrics/ (a counter's
#    name, a gauge's name, a histogram's `_bucket`/`_sum`/`_count`), every
#    label matcher names a label of that metric, and `outcome`, `reason`,
#    `operation` values come from the closed sets in src/metrics/; every
#    metric of src/metrics/ is on some panel.
# 2. Grafana's variables are replaced ($__rate_interval → 5m, $__interval →
#    1m, $__range → 1h; `label=~"$job"` → `label=~".*"`), each panel query
#    becomes a recording rule `dashboard:panel_<panel id>_<target number>`
#    (each template variable's label_values() selector one
#    `dashboard:variable_<name>`), and `promtool check rules` parses them.
# 3. `promtool test rules` runs ops/grafana/dashboard.test.yml against those
#    generated rules: synthetic series in, the panels' values out.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dashboard=${DASHBOARD:-$root/ops/grafana/ltvboost-webhooks.json}
unit_test=$root/ops/grafana/dashboard.test.yml

command -v promtool >/dev/null || {
  echo "check.sh: promtool not found (Debian: apt-get install prometheus)" >&2
  exit 1
}
command -v python3 >/dev/null || { echo "check.sh: python3 not found" >&2; exit 1; }

tmp=$(mktemp -d -t ltvboost-dashboard-check.XXXXXX)
# Kept when a step fails, to read the generated rules.
trap 'status=$?; if [ "$status" -eq 0 ]; then rm -rf "$tmp"; else echo "check.sh: FAILED; generated files kept in $tmp" >&2; fi' EXIT

# What the metrics declare, read as one text: the names and their docs
# (mod.rs), the describe_* calls and the store operations (real.rs), and
# the status table's codes (outcome.rs), as a `CODES` list.
metrics_rs=$tmp/metrics.rs
cat "$root/src/metrics/mod.rs" "$root/src/metrics/real.rs" >"$metrics_rs"
python3 - "$root/src/receiver/outcome.rs" >>"$metrics_rs" <<'PY'
import re, sys
table = open(sys.argv[1], encoding="utf-8").read().split("status_table! {", 1)[1]
codes = sorted(set(re.findall(r'=>\s*\w+,\s*"([a-z_]+)",', table)))
if len(codes) < 20:
    sys.exit(f"check.sh: found only {len(codes)} codes in the status table: has its format changed?")
print("const CODES: &[&str] = &[" + ", ".join(f'"{c}"' for c in codes) + "];")
PY

echo "== dashboard: panels, metric names, labels ($dashboard)"
python3 - "$dashboard" "$metrics_rs" "$tmp/dashboard.rules.yml" <<'PY'
import json
import re
import sys

dashboard_path, metrics_path, rules_path = sys.argv[1:4]
errors = []


def fail(message):
    errors.append(message)


# ---- What src/metrics/ declares --------------------------------------
src = open(metrics_path, encoding="utf-8").read()
consts = dict(re.findall(r'pub\s+const\s+(\w+)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]+)"', src))
metrics = {v for v in consts.values() if v.startswith("ltvboost_")}
if len(metrics) < 10:
    sys.exit(f"check.sh: found only {len(metrics)} metric names in {metrics_path}: has its format changed?")

kinds = {}
for kind, ident in re.findall(r"describe_(counter|gauge|histogram)!\(\s*(\w+)", src):
    if ident in consts:
        kinds[consts[ident]] = kind
labels = {}
for name, kind, cell in re.findall(r"^//! \| `(ltvboost_\w+)` \| (\w+) \|([^|\n]*)\|", src, re.M):
    kinds.setdefault(name, kind)
    labels[name] = set(re.findall(r"`(\w+)`", cell))
for name in sorted(metrics):
    if kinds.get(name) not in ("counter", "gauge", "histogram"):
        fail(f"src/metrics/: no type (describe_* call or module-docs table row) for {name}")
    labels.setdefault(name, set())


def string_list(ident):
    found = re.search(rf"\b{ident}\s*:\s*&\[&str\]\s*=\s*&\[(.*?)\];", src, re.S)
    if not found:
        sys.exit(f"check.sh: {ident} not found in {metrics_path}: has its format changed?")
    return set(re.findall(r'"([^"]*)"', found.group(1)))


codes = string_list("CODES")
operations = string_list("OPERATIONS")
# `outcome` is Outcome::kind: a row's code, or `rejected`; `reason` a
# rejection's code, or "" for the other outcomes.
value_sets = {
    "outcome": codes | {"rejected"},
    "reason": codes | {""},
    "operation": operations,
}

# The series the Prometheus exporter writes, and the metric of each.
series = {}
for name in metrics:
    kind = kinds.get(name)
    if kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            series[name + suffix] = name
    else:
        series[name] = name
        if kind == "counter" and not name.endswith("_total"):
            series[name + "_total"] = name

# ---- The dashboard -----------------------------------------------------
try:
    dash = json.load(open(dashboard_path, encoding="utf-8"))
except (OSError, ValueError) as e:
    sys.exit(f"check.sh: cannot read {dashboard_path}: {e}")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def walk_datasources(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and value != DATASOURCE:
                fail(f"{where}: datasource {json.dumps(value)}, expected {json.dumps(DATASOURCE)} (no hard-coded UID)")
            else:
                walk_datasources(value, where)
    elif isinstance(node, list):
        for item in node:
            walk_datasources(item, where)


variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource")
if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    fail('templating: no `datasource` variable of type datasource, query "prometheus"')
if not isinstance(dash.get("schemaVersion"), int):
    fail("no schemaVersion")

BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h",
            "__range_s": "3600", "__interval_ms": "60000"}
# $name, ${name}, ${name:format}, [[name]]; not label_replace's "$1".
VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def var_name(m):
    return m.group(1) or m.group(2) or m.group(3)


def substitute(expr, where):
    """Grafana's variables replaced by values Prometheus accepts."""
    def in_matcher(m):
        label, op, value = m.groups()
        def one(v):
            name = var_name(v)
            if name not in variables:
                fail(f"{where}: unknown variable ${name} in {label}{op}\"{value}\"")
            elif op not in ("=~", "!~"):
                fail(f"{where}: {label}{op}\"{value}\": a template variable needs =~ (it may hold several values, or All)")
            return ".*"
        return f'{label}{op}"{VAR.sub(one, value)}"'

    expr = MATCHER.sub(in_matcher, expr)

    def outside(v):
        name = var_name(v)
        if name in BUILTINS:
            return BUILTINS[name]
        fail(f"{where}: variable ${name} outside a label matcher")
        return v.group(0)

    return VAR.sub(outside, expr)


SELECTOR = re.compile(r"(?<![\w:$])(ltvboost_\w+)\s*(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
used = set()


def check_names(expr, where):
    """Every ltvboost_ name a series of src/metrics/; matchers its labels."""
    if "__name__" in expr:
        fail(f"{where}: selects by __name__: name each metric, so a rename breaks this check")
    named = []
    for m in SELECTOR.finditer(expr):
        name, body = m.group(1), m.group(2) or ""
        metric = series.get(name)
        if metric is None:
            hint = ""
            for s in sorted(series):
                if s.startswith(name) or name.startswith(s):
                    hint = f" (did you mean {s}?)"
                    break
            fail(f"{where}: {name} is not a series of any metric in src/metrics/{hint}")
            continue
        used.add(metric)
        named.append(metric)
        allowed = labels[metric] | {"job", "instance"} | ({"le"} if name.endswith("_bucket") else set())
        for label, op, value in MATCHER.findall(body):
            if label not in allowed:
                fail(f"{where}: {name} has no label {label!r} (labels: {', '.join(sorted(allowed))})")
                continue
            if label == "reason" and "outcome" not in labels[metric]:
                continue  # a reason of its own (replay check), not an outcome's
            values = value_sets.get(label)
            if values is None:
                continue
            if op in ("=", "!="):
                candidates = [value]
            elif re.fullmatch(r"[\w|]*", value):
                candidates = value.split("|")
            else:
                continue  # a real regular expression: not checked
            for v in candidates:
                if v not in values:
                    fail(f"{where}: {label}{op}\"{value}\": {v!r} is not a value of {label} in src/metrics/")
    known = set().union(*(labels[m] for m in named)) if named else set()
    known |= {"job", "instance", "le"}
    for group in GROUPING.findall(expr):
        for label in filter(None, (s.strip() for s in group.split(","))):
            if label not in known:
                fail(f"{where}: groups by {label!r}, a label of none of its metrics")


def panels(nodes):
    for p in nodes:
        yield p
        yield from panels(p.get("panels", []))


rules = []
ids = set()
count = 0
for p in panels(dash.get("panels", [])):
    pid, title = p.get("id"), p.get("title", "")
    where = f'panel {pid} "{title}"'
    if p.get("type") == "row":
        continue
    count += 1
    if not isinstance(pid, int) or pid in ids:
        fail(f"{where}: panel id missing or not unique")
    ids.add(pid)
    walk_datasources(p, where)
    if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        fail(f"{where}: no unit (fieldConfig.defaults.unit)")
    targets = p.get("targets") or []
    if not targets:
        fail(f"{where}: no target")
    for n, t in enumerate(targets, 1):
        twhere = f"{where}, target {t.get('refId', n)}"
        expr = (t.get("expr") or "").strip()
        if not expr:
            fail(f"{twhere}: no expr")
            continue
        expr = substitute(expr, twhere)
        check_names(expr, twhere)
        rules.append((f"dashboard:panel_{pid}_{n}", expr, f"{where}, target {t.get('refId', n)}"))
if count == 0:
    fail("no panels")

LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)
for name, v in variables.items():
    if v.get("type") != "query":
        continue
    where = f"variable {name}"
    walk_datasources(v, where)
    query = v.get("query")
    query = query.get("query", "") if isinstance(query, dict) else (query or "")
    m = LABEL_VALUES.match(query)
    if not m:
        fail(f"{where}: query {query!r} is not label_values(selector, label)")
        continue
    selector, label = m.group(1) or "up", m.group(2)
    rules.append((f"dashboard:variable_{name}", f"count by ({label}) ({substitute(selector, where)})", where))

for metric in sorted(metrics - used):
    fail(f"{metric} (src/metrics/) is on no panel: add it to the dashboard")

if errors:
    print("\n".join(f"FAIL {e}" for e in errors), file=sys.stderr)
    sys.exit(1)

with open(rules_path, "w", encoding="utf-8") as out:
    out.write("# Generated by ops/grafana/check.sh from the dashboard's queries.\n")
    out.write("groups:\n  - name: ltvboost-webhooks-dashboard\n    rules:\n")
    for record, expr, where in rules:
        out.write(f"      # {' '.join(where.split())}\n")
        # A JSON string is a YAML double-quoted scalar.
        out.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
print(f"{count} panels, {len(rules)} queries; {len(used)} of {len(metrics)} metrics of src/metrics/ used, every name and label known")
PY

echo "== promtool check rules (every query parses)"
promtool check rules "$tmp/dashboard.rules.yml"

echo "== promtool test rules (queries return the expected values on synthetic series)"
cp "$unit_test" "$tmp/dashboard.test.yml"
promtool test rules "$tmp/dashboard.test.yml"
