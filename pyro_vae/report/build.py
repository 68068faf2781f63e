"""The study report: numbers, verdicts computed from them, and figures, as Markdown and HTML.

    build_report("runs/ae_vs_vae", "runs/ae_vs_vae/report")

evaluates every run of the study that lacks an evaluation (never retraining one), then writes into
the report folder

    results.json   one object per run: config, data provenance, versions, final bounds, every metric
    results.csv    one row per run, one column per scalar metric and key config field
    figures/*.png  the figures, variants side by side on shared scales
    report.md      the report, figures linked by relative path
    report.html    the same report as a page (inline CSS) linking figures/; self_contained=True embeds
                   the figures as data: URIs instead, one file to send (committed reports link: each
                   byte is stored once)
    explorer.html  the code-space explorer of the 2-D variants (pyro_vae.report.explorer), unless
                   explorer=False: committed reports go without it (its decodes come from the runs'
                   checkpoints, megabytes at each rebuild) and say how to build it
    .report-files.json  the files above: a rebuild replaces these and refuses a folder holding others

The files appear together when all are written (pyro_vae.report.folder), and one build at a time.

The verdicts are those of the study file's [claims.NAME] tables (pyro_vae.study.claims); a study
without claims gets tables and figures only.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Callable

from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EVALUATION_ARRAYS, evaluate_run
from pyro_vae.io import atomic_write_bytes
from pyro_vae.report.convergence import convergence_blocks
from pyro_vae.report.document import (
    Block,
    Bullets,
    FigureRow,
    Heading,
    Inline,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from pyro_vae.report.explorer import FILE as EXPLORER
from pyro_vae.report.explorer import write_explorer
from pyro_vae.report.figures import make_figures
from pyro_vae.report.folder import check_report_folder, report_folder
from pyro_vae.report.published import published_blocks
from pyro_vae.report.tables import (
    VARIANT_COLUMNS,
    all_metrics_tables,
    comparison_table,
    counted,
    csv_text,
    fmt,
    fmt_value,
    json_safe,
    nan_warnings,
    ordered_metrics,
    result_row,
)
from pyro_vae.report.related import related_blocks
from pyro_vae.report.verdicts import claim_blocks, claim_inputs, glance_blocks
from pyro_vae.study.claims import judge_claims
from pyro_vae.evaluation.presets import QUICK
from pyro_vae.study.folders import RunFolders, study_from_runs
from pyro_vae.study.overrides import with_quick
from pyro_vae.study.runner import collect, evaluate_study
from pyro_vae.study.spec import Study
from pyro_vae.study.statistics import summarize
from pyro_vae.config import TrainConfig
from pyro_vae.training import runs
from pyro_vae.training.plateau import Plateau

__all__ = ["build_report", "build_runs_report", "check_report_folder"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _annealing(results: list[dict]) -> list[Inline]:
    """What KL annealing did, read from the runs' own records of beta per epoch (metrics.jsonl)."""
    items: list[Inline] = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        run = next(r for r in results if r["variant"] == variant)
        warmup = run["config"].get("beta_warmup_epochs") or 0
        betas = [m["beta"] for m in run["training_curve"] if "beta" in m][: warmup + 1]
        if warmup and betas:
            items.append([f"KL annealing in {variant}: β per training epoch {', '.join(f'{b:g}' for b in betas)}"
                          + (", …" if len(run["training_curve"]) > len(betas) else "")
                          + f": β × e / {warmup} in epoch e ≤ {warmup}, so it starts at β/{warmup} in the first epoch, "
                          "not at 0."])
    return items


def _setup_blocks(study: Study, results: list[dict], values: dict, variants: list[str] | None = None) -> list[Block]:
    variants = list(study.variants) if variants is None else variants  # the variants with finished runs
    first = results[0]
    cfg, data, versions = first["config"], first["data"], first["versions"]
    blocks: list[Block] = [Heading(2, "Setup")]
    embedded = next((r["data"] for r in results if r["data"].get("origin") == "embedded"), None)
    if embedded:
        blocks.append(Paragraph("The data is the MNIST sample shipped inside pyro-vae, not data supplied by the user: "
                                + embedded.get("note", "") + ". Every number below comes from it.", "warning"))
    if len({json.dumps(r["data"], sort_keys=True) for r in results}) > 1:
        blocks.append(Paragraph("The runs did not all see the same data (provenance differs between run folders); "
                                "each run was evaluated on its own data, listed here (and in results.json):", "warning"))
        blocks.append(Bullets([_run_data(r) for r in results]))
    sources = list(dict.fromkeys((r["config"]["dataset"], r["data"].get("origin", "?"), r["data"].get("raw_dir", "?"))
                                 for r in results))  # each dataset and the folder it was read from
    data_line: list = ["Data: "]
    for i, (dataset, origin, raw_dir) in enumerate(sources):
        data_line += ["; " if i else "", ("b", dataset), f" from {ORIGINS.get(origin, origin)} ({raw_dir})"]
    files = list(dict.fromkeys(
        (f"{r['config']['dataset']} " if len(sources) > 1 else "")
        + f"{key.split('_')[0]} file {Path(d['images']).name} (sha256 {d['images_sha256'][:12]}…, {d['count']:,} images)"
        for r in results for key, d in r["data"].items() if key.endswith("_file") and isinstance(d, dict) and "images" in d))
    evaluation = study.eval_settings()
    accuracy = summarize([r["evaluation"].get("classifier_accuracy") for r in results])
    wall = sum(r["train_seconds"] + float(r["evaluation"].get("eval_seconds", 0.0)) for r in results)
    seeds = sorted({r["seed"] for r in results})
    shared = {k: cfg[k] for k in cfg if all(r["config"].get(k) == cfg[k] for r in results) and k != "seed"}
    items: list[Inline] = [
        data_line + ["."],
        ["Split: " + str(data.get("split", "?")) + "; used "
         + f"{data.get('train_count', '?'):,} training and {data.get('test_count', '?'):,} test images"
         + (f" (limits: train {cfg['train_limit']}, test {cfg['test_limit']})" if cfg.get("train_limit") or cfg.get("test_limit") else "")
         + "."] + ([" Files: " + "; ".join(files) + "."] if files else []),
        [f"Binarisation: {cfg['binarize']} "
         + {"dynamic": "(a fresh Bernoulli draw of every training image each epoch; one fixed draw of the test images)",
            "fixed": "(one seeded Bernoulli draw of the training images; one fixed draw of the test images)",
            "none": f"(the grey values in [0, 1] as they are, scored by the {cfg['likelihood']} likelihood)"}.get(cfg["binarize"], "") + "."],
        [f"Network: {cfg['network']} encoder/decoder, "
         + (f"options {fmt_value(cfg['network_options'])}" if cfg.get("network_options") else f"hidden width {cfg['hidden_dim']}")
         + (f", decoder output bias from the training mean" if cfg.get("output_bias") == "data-mean" else "")
         + "; latent size " + "/".join(str(d) for d in dict.fromkeys(r["config"]["latent_dim"] for r in results))
         + f"; likelihood {cfg['likelihood']}."],
        [f"Training: {_epochs_text(results)}, batch size "
         f"{cfg['batch_size']}, Adam lr {cfg['lr']:g}"
         + (f" on the {cfg['lr_schedule']} schedule {fmt_value(cfg.get('lr_schedule_options') or {})}"
            if cfg.get("lr_schedule", "constant") != "constant" else "")
         + (f", {cfg['validation']} training images held out for validation" if cfg.get("validation") else "")
         + ", objective "
         + "/".join(dict.fromkeys(r["config"]["objective"] for r in results))
         + f" with {counted(cfg['num_particles'], 'particle')}; seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}."]
        + ([" Changed on the command line: " + _overrides_text(study.overrides) + "."] if study.overrides else []),
    ] + _annealing(results) + [
        [f"Evaluation: codes are posterior means of the test images; log p(x) by importance sampling with K = "
         f"{evaluation.num_samples} samples per image (PSIS diagnostics), exact 2-D quadrature to {evaluation.grid_tol:g} nats; "
         + (f"likelihoods on the first {evaluation.likelihood_images} test images; " if evaluation.likelihood_images else "")
         + f"{evaluation.generated} generated images per sampler, {evaluation.pairs} pairs per midpoint kind, eval seed {evaluation.seed}."],
        [f"Sample-quality classifier: a small CNN trained on the same training split; test accuracy {fmt(accuracy.mean)}"
         + (" (it scores every generated image; FID is computed on its penultimate features against the real test images)."
            if accuracy.n else ".")],
        ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
         + ("" if len({json.dumps(r["versions"], sort_keys=True) for r in results}) == 1 else
            " (runs differ in versions; see results.json)") + "."],
        [f"Compute: {wall / 60:.1f} min ({wall:.0f} s) in total over {counted(len(results), 'run')} (sum of the epoch times and the latest evaluation times)."],
    ]
    blocks.append(Bullets(items))
    differing = [k for k in VARIANT_COLUMNS if k not in shared]
    header = ["variant"] + (differing or ["guide", "prior", "beta"])
    rows = []
    for v in variants:
        c = next(r["config"] for r in results if r["variant"] == v)
        rows.append([v] + [fmt_value(c.get(k)) for k in header[1:]])
    blocks.append(Table(header, rows, caption="What distinguishes the variants"))
    return blocks


ORIGINS = {"--data-dir": "the folder given with --data-dir", "PYRO_VAE_DATA": "the folder in $PYRO_VAE_DATA",
           "cache": "the per-user cache", "download": "a fresh torchvision download",
           "embedded": "THE SMALL SAMPLE EMBEDDED IN THE PACKAGE"}  # where the data was read from, in words


def _run_data(row: dict) -> list[Inline]:
    """One run's data in a line: dataset, split and the images it used."""
    data = row["data"]
    return [f"{row['variant']} seed {row['seed']}: ", ("b", row["config"]["dataset"]),
            f", {data.get('split', '?')}, {data.get('train_count', '?')} training / {data.get('test_count', '?')} test images"]


def _epochs_text(results: list[dict]) -> str:
    """The epochs the runs trained: the configured number, or the plateau rule and where it stopped each run."""
    most = "/".join(str(e) for e in dict.fromkeys(r["config"]["epochs"] for r in results))
    most += " epoch" if most == "1" else " epochs"
    rules = set(Plateau.of(TrainConfig.from_dict(r["config"])) for r in results)
    if rules == {None}:
        return most
    lengths = [len(r["training_curve"]) for r in results]
    stopped = sum(bool(r["training_curve"] and r["training_curve"][-1].get("stopped")) for r in results)
    stops = (f"{'the run' if stopped == 1 else f'all {stopped} runs'} stopped by the rule" if stopped == len(results) else
             f"{stopped} of {len(results)} runs stopped by a rule, the others at their limit")
    trained = f"{min(lengths)}-{max(lengths)} epochs (median {statistics.median(lengths):g})"
    if len(rules) > 1:
        return f"{trained}, the variants under different plateau rules or none (see results.json); {stops}"
    watched = {"valid_elbo" in r["training_curve"][0] for r in results if r["training_curve"]}
    caveat = ("" if watched == {True} else " (no validation images were held out, so the test bound decided when to "
              "stop; the last epoch is kept, not the best)")
    return (f"{trained}, each run trained {next(iter(rules)).describe('validation' if watched == {True} else 'test')}, "
            f"at most {most}; {stops}{caveat}")


def _skipped_blocks(results: list[dict]) -> list[Block]:
    """Runs whose evaluation left measures out (too few training codes for them), and why."""
    skipped = [f"{r['variant']} seed {r['seed']}: {r['evaluation']['code_space_skipped']}" for r in results
               if r["evaluation"].get("code_space_skipped")]
    if not skipped:
        return []
    return [Paragraph("Some code-space measures could not be made, so their cells are empty for these runs:", "warning"),
            Bullets([[item] for item in skipped])]


def _overrides_text(overrides: dict) -> str:
    parts = [f"{k} → {fmt_value(v)}" for k, v in overrides.get("settings", {}).items()]
    if "seeds" in overrides:
        parts.append("seeds → " + ", ".join(map(str, overrides["seeds"])))
    if overrides.get("evaluation") == "quick":
        parts.append("evaluation → the quick preset (--quick: " + ", ".join(f"{k} {v:,}" for k, v in QUICK.items())
                     + "; a looser log p(x) bound and wider intervals than the study's own settings)")
    return ", ".join(parts)


def _description_blocks(study: Study) -> list[Block]:
    """The study file's description; beside it, what the command line changed, which the text may contradict."""
    text = " ".join(study.description.split())
    if not study.overrides:
        return [Paragraph(text)]
    return [Paragraph([("b", "The study file's description"), f", written for the file's own settings: {text}"]),
            Paragraph(f"The text above describes the study file's settings, not this study's: the command line changed "
                      f"{_overrides_text(study.overrides)}. Where the two disagree (epochs, seeds, running times), "
                      "the Setup section below and results.json say what was run.", "warning")]


def _missing_block(study: Study, runs_dir: Path, missing: list[tuple[str, int]], total: int) -> Paragraph:
    where = ", ".join(f"{v} seed {s} ({study.run_dir(runs_dir, v, s)})" for v, s in missing)
    again = (f"finish them with `pyro-vae study STUDY_FILE --out {runs_dir}` (it resumes unfinished runs) and build "
             "this report again" if not isinstance(study, RunFolders) else "finish them with `pyro-vae train --resume RUN_DIR`")
    return Paragraph(f"Partial report: {total - len(missing)} of {total} runs have finished. Missing or unfinished: {where}. "
                     f"Numbers below come from the finished runs only; a claim is judged only on as many paired seeds as "
                     f"it needs (its min_seeds), else it is not judged and says why; {again}.", "warning")


def _figure_runs(study: Study, runs_dir: Path, finished: list[tuple[str, int]]) -> dict[str, tuple[int, Path]]:
    """One finished run per variant for the figures: the seed the most variants have finished, else each one's first."""
    seeds = [s for _, s in finished]
    common = max(dict.fromkeys(seeds), key=seeds.count)
    chosen = {}
    for v, s in finished:
        if v not in chosen or (s == common and chosen[v][0] != common):
            chosen[v] = (s, study.run_dir(runs_dir, v, s))
    return chosen


def explorer_paragraph(written: bool) -> Paragraph:
    """The report's line on explorer.html: its link, or (left out) how to build it from the runs."""
    if written:
        return Paragraph([("b", "Explore the code spaces: "), ("link", EXPLORER),
                          " (hover to see what each variant decodes at a point, click to pin it in all of them)."])
    return Paragraph([("b", "Explore the code spaces: "), ("code", EXPLORER),
                      " is not stored with this report (its decodes come from the runs' checkpoints, which are not "
                      "committed); ", ("code", "pyro-vae report RUNS_DIR --out DIR"),
                      " builds it beside report.html from the runs (hover to see what each variant decodes at a "
                      "point, click to pin it in all of them)."])


def build_report(runs_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = _stderr, quick: bool = False,
                 self_contained: bool = False, explorer: bool = True) -> Path:
    """Report on a study's finished runs (evaluating what lacks an evaluation, never training); returns
    report.html. Missing or unfinished runs are listed at the top of the report. `quick`: what needs an
    evaluation gets the quick preset (pyro_vae.evaluation.presets.QUICK), and the report says so.
    `self_contained`: report.html embeds its figures (one file to send) instead of linking figures/.
    `explorer`: False leaves explorer.html out (the page says how to build it), as committed reports do."""
    runs_dir = Path(runs_dir)
    check_report_folder(Path(out_dir))
    return _build(with_quick(Study.from_runs_dir(runs_dir), quick, runs_dir), runs_dir, Path(out_dir), log,
                  self_contained, explorer)


def build_runs_report(run_dirs: list[str | Path], out_dir: str | Path, log: Callable[[str], None] = _stderr,
                      quick: bool = False, self_contained: bool = False, explorer: bool = True) -> Path:
    """Report on any run folders side by side, each a variant named after its folder; returns report.html."""
    check_report_folder(Path(out_dir))
    return _build(with_quick(study_from_runs(run_dirs), quick, Path()), Path(), Path(out_dir), log, self_contained,
                  explorer)


def _build(study: Study, runs_dir: Path, out_dir: Path, log: Callable[[str], None], self_contained: bool,
           explorer: bool) -> Path:
    with report_folder(out_dir) as folder:  # locked; the report appears in out_dir once every file is written
        _write_report(study, runs_dir, out_dir, folder, log, self_contained, explorer)
    html_path = out_dir / "report.html"
    log(f"report written: {html_path} (and report.md, results.json, results.csv, figures/)")
    return html_path


def _write_report(study: Study, runs_dir: Path, out_dir: Path, folder: Path, log: Callable[[str], None],
                  self_contained: bool, explorer: bool) -> None:
    """The report's files into `folder`, whence they move to out_dir."""
    cells = study.cells()
    finished = [c for c in cells if runs.is_complete(study.run_dir(runs_dir, *c))]
    missing = [c for c in cells if c not in finished]
    for variant, seed in missing:
        log(f"report: {study.run_dir(runs_dir, variant, seed)} is missing or unfinished; left out")
    if not finished:
        none = "the run has not" if len(cells) == 1 else f"none of the {len(cells)} runs has"
        raise UserError(f"{none} finished yet, so there is nothing to report; train them first (pyro-vae study or pyro-vae train)")
    evaluate_study(study, runs_dir, log, finished)
    for variant, seed in finished:  # evaluation.json without its arrays: evaluate that run again
        run = study.run_dir(runs_dir, variant, seed)
        if not (run / EVALUATION_ARRAYS).exists():
            log(f"{run} lacks {EVALUATION_ARRAYS}; evaluating it again")
            evaluate_run(run, study.eval_settings(), log=log)
    rows = collect(study, runs_dir, finished)
    log(f"report for {study.name}: {len(rows)} of {len(cells)} runs -> {out_dir}")

    results = [result_row(r) for r in rows]
    variants = [v for v in study.variants if any(fv == v for fv, _ in finished)]
    values, seeded, context = claim_inputs(results)  # seeded: what the claims pair by seed
    metric_names = [m for _, ms in ordered_metrics([m for v in variants for m in values[v]]) for m in ms]
    _write_text(folder / "results.json", json.dumps(json_safe(results), indent=2) + "\n")
    _write_text(folder / "results.csv", csv_text(results, metric_names))

    log("report: drawing figures")
    figures = make_figures(_figure_runs(study, runs_dir, finished), folder, results, values,
                           max(sum(fv == v for fv, _ in finished) for v in variants), log)
    if explorer and write_explorer(study, runs_dir, folder, log):
        figures.setdefault("codes", []).append(explorer_paragraph(True))
    elif not explorer and any(r["config"]["latent_dim"] == 2 for r in results):
        figures.setdefault("codes", []).append(explorer_paragraph(False))

    blocks: list[Block] = [Heading(1, study.title)]
    if missing:
        blocks.append(_missing_block(study, runs_dir, missing, len(cells)))
    if study.description:
        blocks += _description_blocks(study)
    if isinstance(study, RunFolders):
        blocks.append(Paragraph(f"{counted(len(variants), 'run folder')} compared side by side, each a variant named after its folder: "
                                + ", ".join(f"{v} ({study.run_dir(runs_dir, v, s)})" for v, s in cells)
                                + ". Every number is computed from the run folders; results.json and results.csv next to "
                                "this report hold the per-run values."))
    else:
        blocks.append(Paragraph(f"Study {study.name}: {counted(len(study.variants), 'variant')} ({', '.join(study.variants)}) × "
                                f"{counted(len(study.seeds), 'seed')}, runs in {runs_dir}. Every number is computed from the run "
                                "folders; results.json and results.csv next to this report hold the per-run values."))
    claims = judge_claims(study.claim_specs(), seeded, context)
    if claims:
        blocks += glance_blocks(claims)
    else:
        blocks.append(Paragraph(("Run folders outside a study carry no claims" if isinstance(study, RunFolders) else
                                 "The study file states no claims ([claims.NAME] tables)")
                                + ", so no claim is judged; the tables and figures below compare all variants.", "note"))
    blocks += _setup_blocks(study, results, values, variants)
    blocks += published_blocks(study.published, values, results)
    blocks += related_blocks(study.related, claims, values)

    blocks.append(Heading(2, "All variants compared"))
    table, warnings = comparison_table(variants, values, context)
    if table:
        blocks.append(table)
    blocks += warnings + nan_warnings(results) + _skipped_blocks(results)
    if "metric_bars" in figures:
        blocks.append(FigureRow(figures["metric_bars"], "Headline metrics: bars are means over seeds, error bars the sample sd, "
                                                        "dots the seeds; red dashed lines mark ideal values."))
    blocks += claim_blocks(claims)
    blocks += convergence_blocks(results, variants)

    blocks.append(Heading(2, "Figures"))
    sections = [("codes", "Code spaces"), ("codes_sampled", None), ("marginals", None), ("prior_density", None),
                ("fidelity_distance", "Holes"), ("prior_samples", "Generation"),
                ("box_samples", None), ("manifold", None), ("reconstructions", "Reconstruction"),
                ("class_spread", "Class spread"), ("class_spread_whitened", None), ("training_curves", "Training")]
    for name, heading in sections:
        if heading:
            blocks.append(Heading(3, heading))
        blocks += figures.get(name, [])

    blocks.append(Heading(2, "All metrics (mean ± sd over seeds)"))
    blocks.append(Paragraph("Bold: best variant for metrics with a direction. The final train/test bound is the training "
                            "objective's value per image (β-scaled), comparable only between variants with the same objective."))
    blocks += all_metrics_tables(variants, values, context)

    _write_text(folder / "report.md", render_markdown(blocks))
    _write_text(folder / "report.html", render_html(blocks, study.title, folder, self_contained))
