"""The bench's report as table rows (one dict per row) and as aligned text."""

from __future__ import annotations

import math

from pyro_vae.bench.targets import (
    TARGET_BATCHING_SHARE,
    TARGET_HELP_SECONDS,
    TARGET_IS_OVER_FLOOR,
    TARGET_IS_OVER_GRID,
    TARGET_STUDY_BYTES,
    TARGET_STUDY_SECONDS,
)

HEADS = {"item": "item", "median": "median", "spread": "spread (min - max)", "ratio": "ratio/share", "target": "target",
         "met": "met", "note": "note"}


def _fmt_s(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g} s" if v < 100 else f"{v:.0f} s"


def _spread(s: dict) -> str:
    return f"{_fmt_s(s['min'])} - {_fmt_s(s['max'])}" if s["min"] != s["max"] else "-"


def _yes(met) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def table_rows(report: dict) -> list[dict]:
    rows: list[dict] = []

    def row(item, median="-", spread="-", ratio="-", target="-", met=None, note=""):
        rows.append({"item": item, "median": median, "spread": spread, "ratio": ratio, "target": target, "met": _yes(met), "note": note})

    startup = report.get("startup")
    for name, r in (startup or {}).get("items", {}).items():
        row(f"startup: {name}", _fmt_s(r["median"]), _spread(r), "", f"<= {TARGET_HELP_SECONDS:g} s", r["met"],
            f"a fresh process ({startup['program']}), exit {'/'.join(map(str, r['exit_codes']))}")
    for name, r in report.get("train", {}).items():
        p, q = r["project"], r["reference"]
        row(f"train {name}: project epoch", _fmt_s(p["median"]), _spread(p), "", "", None,
            f"{p['images_per_second']:,.0f} img/s, {r['images']} img; first epoch {_fmt_s(p['first_epoch_seconds'])}"
            + ("; compiled" if r["jit"] else "; eager"))
        row(f"train {name}: reference epoch", _fmt_s(q["median"]), _spread(q), "", "", None, f"{q['images_per_second']:,.0f} img/s")
        pairs = r["ratio_pairs"]
        row(f"train {name}: project/reference", "", f"{pairs['min']:.3f} - {pairs['max']:.3f}", f"{r['ratio']:.3f}",
            f"<= {r['target']:.2f}" if r["target"] else "-", r["met"], r["note"])
    b = report.get("batching")
    if b:
        row("batching: wait+gather / epoch", _fmt_s(b["total"]["median"]), _spread(b["total"]), f"{100 * b['share']:.1f}%",
            f"<= {100 * TARGET_BATCHING_SHARE:.0f}%", b["met"],
            f"waiting for the drawn-ahead binarisation {100 * b['wait_share']:.1f}% + gather {100 * b['gather_share']:.1f}% "
            f"of the {b['variant']} epoch")
        row("batching: one binarisation draw", _fmt_s(b["binarise"]["median"]), _spread(b["binarise"]),
            f"{100 * b['binarise_share']:.1f}%", "", None, "made in a background thread during the previous epoch")
        if b.get("dataloader"):
            d = b["dataloader"]
            row("batching: torch DataLoader / epoch", _fmt_s(d["median"]), _spread(d), f"{100 * d['median'] / b['project_epoch_seconds']:.1f}%",
                "", None, "for comparison: gathers of the binarised tensor via DataLoader(TensorDataset, shuffle=True)")
    peers = report.get("peers")
    if peers:
        ours = peers["sides"]["pyro-vae"]["test_elbo"]
        for name, s in peers["sides"].items():
            faster, better = s["ratio"] < 1, s["test_elbo"] > ours + peers["elbo_tolerance"]
            row(f"peer {name}: epoch", _fmt_s(s["epoch"]["median"]), _spread(s["epoch"]), f"{s['ratio']:.2f}x",
                "-" if name == "pyro-vae" else ">= 1x, ELBO not better", None if name == "pyro-vae" else not (faster or better),
                f"test ELBO {s['test_elbo']:.2f} after {peers['epochs']} epochs; {s['note']}")
        for name, why in peers["skipped"].items():
            row(f"peer {name}", note=f"skipped: {why}")
    book = report.get("book")
    if book:
        for threads, setting in book["threads"].items():
            for name, side in setting["sides"].items():
                over = side.get("over keras")
                pairs = side.get("over keras pairs")
                is_best = name == setting["best"] and over is not None
                row(f"book {threads} thr: {name} epoch", _fmt_s(side["epoch"]["median"]), _spread(side["epoch"]),
                    "-" if over is None else f"{over:.2f}x keras", f"<= {book['target']:g}x keras" if is_best else "-",
                    setting["met"] if is_best else None,
                    f"{book['images']} img, {side['images_per_second']:,.0f} img/s"
                    + (f", {side['over plain PyTorch']:.2f}x plain PyTorch" if "over plain PyTorch" in side else "")
                    + (f"; per-repeat {pairs['min']:.2f}-{pairs['max']:.2f}x keras" if pairs else "") + f"; {side['note']}")
        if book["keras_skipped"]:
            row("book: keras", note=f"skipped: {book['keras_skipped']}")
        if "bf16" not in book["precisions"]:
            row("book: pyro-vae bf16", note="not timed: no bfloat16 units here (CUDA, AMX or AVX-512 BF16); "
                "--book-precisions float32,bf16 times it anyway")
    twin = report.get("twin")
    if twin:
        for dataset, s in twin["summary"].items():
            row(f"twin {dataset}: project - twin test ELBO", f"{s['mean_difference']:+.2f}", "", "",
                f"|mean| <= {twin['target_nats']}", s["met"],
                f"{s['project']:.2f} vs {s['twin']:.2f} nats/image, mean of {s['seeds']} seeds")
    e = report.get("eval")
    if e:
        at_full = "" if e["targets_apply"] else " @10k"
        imp = e.get("importance")
        if imp:
            row(f"eval IS K={e['num_samples']}, {e['images']} img: total", _fmt_s(imp["median"]), _spread(imp), "", "", None,
                f"log p(x) {imp['mean_log_px']:.2f} nats; sampling {_fmt_s(imp['sampling']['median'])} + PSIS k {_fmt_s(imp['psis']['median'])}; "
                f"k>0.7 for {100 * imp['share_k_above_0_7']:.1f}%")
            f = e["floor"]
            row("eval IS sampling / decoder floor", _fmt_s(f["decoder_and_loglik_seconds"]), "", f"{imp['sampling_over_floor']:.2f}x",
                f"<= {TARGET_IS_OVER_FLOOR:.2f}x", imp["met"],
                f"floor = decode + score N*K codes; decoder alone {_fmt_s(f['decoder_seconds'])}"
                + (f", {f['decoder_matmul_flops'] / 1e12:.2f} TFLOP at {f['decoder_gflops_per_second']:.0f} GFLOP/s" if f["decoder_matmul_flops"] else ""))
        g = e.get("grid")
        if g:
            row(f"eval grid 2-D exact, {e['images']} img", _fmt_s(g["median"]), _spread(g), "",
                f"<= {_fmt_s(g['target_seconds'])}" + at_full, g["met"],
                f"log p(x) {g['mean_log_px']:.2f} nats, {g['grid_points']:,} grid points" + ("" if g["converged"] else ", NOT converged"))
        if e.get("is_over_grid"):
            s = e["is_over_grid"]
            row("eval IS time / grid time", "", "", f"{s['ratio']:.1f}x", f">= {TARGET_IS_OVER_GRID:.0f}x" + at_full, s["met"],
                f"sampling alone {s['sampling_ratio']:.1f}x; IS - grid = {e['is_minus_grid_nats']:+.2f} nats")
    s = report.get("study")
    if s:
        for mode, m in s["modes"].items():
            row(f"study --{mode}: wall time", _fmt_s(m["wall_seconds"]), "", "", f"<= {TARGET_STUDY_SECONDS / 60:.0f} min" if mode == "workers 1" else "",
                m["met_time"] if mode == "workers 1" else None,
                f"{m['study']}, exit {m['returncode']}" + (", timed out" if m["timed_out"] else "") + f", driver peak RSS {m['peak_rss_bytes'] / 2**30:.2f} GB")
        first = s["modes"]["workers 1"]
        row("study: peak memory (max RSS)", f"{first['peak_rss_bytes'] / 2**30:.2f} GB", "", "", f"< {TARGET_STUDY_BYTES / 2**30:.0f} GB", first["met_memory"], "--workers 1")
        row("study: --workers 2 speed-up", "", "", f"{s['speedup_workers_2']:.2f}x", "", None, "wall time of --workers 1 / --workers 2")
        row("study: Ray overhead per run", _fmt_s(s["ray_overhead_per_run"]), "", "", "", None,
            f"(ray - workers 2) x 2 slots / {s['runs']} runs; a run takes {_fmt_s(s['run_slot_seconds'])} of a 1-thread slot")
        for workers, seconds in s["projection"].items():
            row(f"study: {s['grid_runs']} runs on {workers} two-core workers", _fmt_s(seconds), "", "", "", None,
                "projected: waves of 2 runs per worker x (run + Ray overhead)")
    return rows


def format_table(rows: list[dict]) -> str:
    widths = {k: max(len(HEADS[k]), *(len(str(r[k])) for r in rows)) if rows else len(HEADS[k]) for k in HEADS}

    def line(r: dict) -> str:  # the note, last, is not padded
        return "  ".join(str(r[k]).ljust(widths[k]) if k != "note" else str(r[k]) for k in HEADS).rstrip()

    return "\n".join([line(HEADS), line({k: "-" * widths[k] for k in HEADS})] + [line(r) for r in rows])
