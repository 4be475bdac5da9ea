"""Turn mutmut's results into benchmarks/results/mutation.json (run by scripts/mutation.sh).

Reads ``mutmut results --all true`` (one ``name: status`` line a mutant) in the folder mutmut ran
in, counts each module's mutants, and moves the survivors listed in
benchmarks/mutation_equivalent.txt (``mutant-name  reason``) from "survived" to "equivalent".
Killed counts mutmut's "killed", "timeout", "segfault" and "caught by type check"; a mutant that no
test reaches ("no tests") or that ran suspiciously long counts as survived. ``kill_rate`` is
killed / (killed + survived), equivalent mutants left out.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.txt"
OUT = ROOT / "benchmarks" / "results" / "mutation.json"
DOC = ROOT / "docs" / "mutation.md"
BEGIN, END = "<!-- mutation_report.py: begin -->", "<!-- mutation_report.py: end -->"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}
LINE = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+?)\s*$")


def module_of(mutant: str) -> str:
    """``workbench.formats.voc.x_parse__mutmut_3`` -> ``workbench.formats.voc`` (methods:
    ``workbench.labelling.journal.xǁJournalǁappend__mutmut_1`` -> ``workbench.labelling.journal``)."""
    return mutant.rsplit(".", 1)[0]


def equivalent_names(path: Path = EQUIVALENT) -> dict[str, str]:
    """Mutant name -> why it is equivalent, from the checked-in list (``#`` starts a comment)."""
    names: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                names[name] = reason.strip()
    return names


def parse(text: str) -> dict[str, str]:
    """Mutant name -> mutmut's status, from ``mutmut results --all true``."""
    return {m["name"]: m["status"] for m in map(LINE.match, text.splitlines()) if m}


def summarise(statuses: dict[str, str], equivalent: dict[str, str], seconds: float | None = None) -> dict:
    modules: dict[str, dict[str, int]] = {}
    survivors: list[str] = []
    for name, status in sorted(statuses.items()):
        if status not in KILLED | SURVIVED:
            continue  # "not checked", "skipped", "check was interrupted by user": not run, not counted
        counts = modules.setdefault(module_of(name), {"killed": 0, "survived": 0, "equivalent": 0})
        if status in KILLED:
            counts["killed"] += 1
        elif name in equivalent:
            counts["equivalent"] += 1
        elif status in SURVIVED:
            counts["survived"] += 1
            survivors.append(f"{name}: {status}")
    killed = sum(c["killed"] for c in modules.values())
    survived = sum(c["survived"] for c in modules.values())
    result = {"modules": modules, "kill_rate": round(killed / (killed + survived), 4) if killed + survived else 0.0}
    result["survivors"] = survivors
    if seconds is not None:
        result["seconds"] = round(seconds)
    return result


def merge(old: dict, statuses: dict[str, str], equivalent: dict[str, str]) -> dict:
    """The last full run's result (``old``) updated by a run of some mutants (mutmut 3 marks
    every mutant it did not run "not checked", so that run alone counts only what it ran): each
    survivor of ``old`` that was run again moves to killed (or to equivalent) when it is now."""
    modules = {name: dict(counts) for name, counts in old["modules"].items()}
    survivors = []
    for line in old.get("survivors", []):
        name = line.split(":", 1)[0]
        status = statuses.get(name, "not checked")
        counts = modules.setdefault(module_of(name), {"killed": 0, "survived": 0, "equivalent": 0})
        if status in KILLED:
            counts["killed"] += 1
            counts["survived"] -= 1
        elif name in equivalent:
            counts["equivalent"] += 1
            counts["survived"] -= 1
        else:
            survivors.append(line if status not in SURVIVED else f"{name}: {status}")
    killed = sum(c["killed"] for c in modules.values())
    survived = sum(c["survived"] for c in modules.values())
    result = {**old, "modules": modules, "survivors": survivors}
    result["kill_rate"] = round(killed / (killed + survived), 4) if killed + survived else 0.0
    return result


_BODIES: dict[Path, dict[str, str]] = {}


def _bodies(path: Path) -> dict[str, str]:
    """Function name -> body (without its def line) of every function in ``path``, parsed once."""
    if path not in _BODIES:
        source = path.read_text(encoding="utf-8")
        found: dict[str, str] = {}
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
                body = ast.get_source_segment(source, node) or ""
                found[node.name] = body.split("\n", 1)[1] if "\n" in body else ""
        _BODIES[path] = found
    return _BODIES[path]


def mutant_diff(name: str, mutants: Path = ROOT / "mutants") -> list[str]:
    """The lines mutant ``name`` changes, ``-`` old and ``+`` new, read from the mutated copy of
    its module in ``mutants/`` (faster than ``mutmut show``, which runs once a mutant)."""
    module, _, function = name.rpartition(".")
    path = mutants / (module.replace(".", "/") + ".py")
    if not path.is_file():
        return []
    bodies = _bodies(path)
    old, new = bodies.get(re.sub(r"__mutmut_\d+$", "__mutmut_orig", function)), bodies.get(function)
    if old is None or new is None:
        return []
    return [
        line.rstrip()
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def markdown(result: dict, equivalent: dict[str, str], baseline: dict[str, str], tests_by_function: dict) -> str:
    """The generated part of docs/mutation.md: the per-module table, every mutant left alive
    (its change and why it stays), and the mutants a first run left alive that are killed now."""
    rows = ["| module | killed | survived | equivalent | kill rate |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, c in sorted(result["modules"].items()):
        rate = c["killed"] / (c["killed"] + c["survived"]) if c["killed"] + c["survived"] else 0.0
        rows.append(f"| `{name}` | {c['killed']} | {c['survived']} | {c['equivalent']} | {rate:.3f} |")
    total = {k: sum(c[k] for c in result["modules"].values()) for k in ("killed", "survived", "equivalent")}
    rows.append(
        f"| **all** | {total['killed']} | {total['survived']} | {total['equivalent']} | {result['kill_rate']:.3f} |"
    )
    out = ["## Results", "", *rows, ""]
    if "seconds" in result:
        out += [f"The last full run took {result['seconds']} s ({result['seconds'] / 60:.0f} min).", ""]
    if "partial_seconds" in result:
        out += [f"The last run of some mutants (`--survivors` or modules) took {result['partial_seconds']} s.", ""]
    if "counted" in result:
        out += [f"Counted: {result['counted']}.", ""]

    def block(name: str) -> list[str]:
        diff = mutant_diff(name)
        return ["  ```diff", *[f"  {line}" for line in diff], "  ```"] if diff else []

    alive = [line.split(": ", 1)[0] for line in result["survivors"]]
    out += ["## Mutants left alive (not killed, not equivalent)", ""]
    if not alive:
        out += ["None.", ""]
    for name in alive:
        out += [f"- `{name}`", *block(name)]
    out += ["", "## Equivalent mutants", "", "Listed with the reason in `benchmarks/mutation_equivalent.txt`.", ""]
    for name, reason in sorted(equivalent.items()):
        out += [f"- `{name}`: {reason}", *block(name)]
    killed_now = sorted(
        n
        for n, s in baseline.items()
        if s in SURVIVED and n in result.get("statuses", {}) and result["statuses"][n] in KILLED
    )
    if killed_now:
        out += [
            "",
            "## Killed by the tests written for this run",
            "",
            "Mutants the first run (the existing tests) left alive, killed now. The tests named are the",
            "new `*_mutants.py` tests that reach the mutated function (the killing test is one of them).",
            "",
        ]
        by_function: dict[str, list[str]] = {}
        for name in killed_now:
            by_function.setdefault(re.sub(r"__mutmut_\d+$", "", name), []).append(name)
        for function, names in sorted(by_function.items()):
            tests = sorted({t.split("[")[0] for t in tests_by_function.get(function, []) if "_mutants.py" in t})
            numbers = ", ".join(n.rsplit("_", 1)[1] for n in names)
            out += [
                f"- `{function}` mutants {numbers}: " + (", ".join(f"`{t}`" for t in tests) or "(an existing test)")
            ]
    return "\n".join(out) + "\n"


def write_doc(text: str, path: Path = DOC) -> None:
    doc = path.read_text(encoding="utf-8")
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="how long a full run took (written to the json)")
    parser.add_argument("--partial-seconds", type=float, help="how long a run of some mutants took")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--doc", action="store_true", help="rewrite the generated part of docs/mutation.md")
    parser.add_argument("--baseline", type=Path, help="`mutmut results --all true` of a run before the new tests")
    args = parser.parse_args(argv)
    mutmut = Path(sys.executable).with_name("mutmut")
    text = subprocess.run(
        [str(mutmut), "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    statuses = parse(text)
    result = summarise(statuses, equivalent_names(), args.seconds)
    if args.partial_seconds is not None and args.out.exists():  # some mutants: on top of the last full run
        result = merge(json.loads(args.out.read_text(encoding="utf-8")), statuses, equivalent_names())
    if args.seconds is None and args.out.exists():  # keep the time of the last full run
        old = json.loads(args.out.read_text(encoding="utf-8"))
        if "seconds" in old:
            result["seconds"] = old["seconds"]
    if args.partial_seconds is not None:
        result["partial_seconds"] = round(args.partial_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.doc:
        baseline = parse(args.baseline.read_text(encoding="utf-8")) if args.baseline else {}
        stats_file = ROOT / "mutants" / "mutmut-stats.json"
        tests = json.loads(stats_file.read_text())["tests_by_mangled_function_name"] if stats_file.exists() else {}
        write_doc(markdown({**result, "statuses": statuses}, equivalent_names(), baseline, tests))
    for name, counts in result["modules"].items():
        print(
            f"{name:40} killed {counts['killed']:4}  survived {counts['survived']:4}  equivalent {counts['equivalent']:3}"
        )
    print(f"kill rate {result['kill_rate']:.3f} ({len(result['survivors'])} survivors) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
