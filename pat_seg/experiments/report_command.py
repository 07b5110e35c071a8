"""``pat-seg report``: the paper's tables (Tables 3-6, Fig. 5 numbers) from finished runs.

The command line: the tables are :func:`pat_seg.experiments.report.report` (which values, how cells are
pooled and rendered: that module's docstring). ``--decision SWEEP.yaml`` prints instead the study's
pre-registered decision rule (the sweep file's ``decision:`` block) executed on its runs, from
``--from-csv`` or ``--logdir``: :mod:`pat_seg.experiments.decision`. Only this module needs both, so
the tables' library does not import the decision rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pat_seg.experiments.decision import decision_report
from pat_seg.experiments.report import FORMATS, HOLM_FAMILIES, SPLITS, IncompleteReport, report


def decision_text(args: argparse.Namespace) -> str:
    """``--decision FILE``: the sweep file's decision rule executed (:mod:`pat_seg.experiments.decision`);
    the options that shape the tables instead are refused."""
    others = {
        "--paired-against": args.paired_against is not None,
        "--holm": args.holm is not None,
        "--per-run": args.per_run,
    }
    others["--runs"] = args.runs != "**"  # the rule names its runs: <sweep name>/<seed>-<arm>
    given = [flag for flag, used in others.items() if used]
    if given:
        raise ValueError(f"--decision executes the sweep file's rule on its own runs; leave out {', '.join(given)}")
    if args.format not in ("markdown", "csv"):
        raise ValueError(f"--decision writes markdown or csv; got --format {args.format}")
    return decision_report(args.decision, args.format, args.from_csv, args.logdir, args.split)


def main(argv: list[str] | None = None) -> None:
    """``pat-seg report --logdir DIR [--format markdown|latex|csv] [--split val|test] [--runs GLOB]
    [--paired-against METHOD [--holm [datasets|methods]]]``, or ``pat-seg report --decision SWEEP.yaml [--from-csv FILE | --logdir DIR] [--format markdown|csv]``."""
    parser = argparse.ArgumentParser(prog="pat-seg report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="lightning_logs", help="where the runs are (default: lightning_logs)")
    parser.add_argument("--format", choices=FORMATS, default="markdown")
    parser.add_argument(
        "--split", choices=SPLITS, help="read <split>/* tags (default: val; with --decision: the rule's split)"
    )
    parser.add_argument("--runs", default="**", help="glob of run directories under logdir, e.g. 'synthetic_table3/*'")
    parser.add_argument("--output", help="write to this file instead of stdout")
    parser.add_argument(
        "--paired-against",
        metavar="METHOD",
        help="also print every method minus METHOD (e.g. 'CB-Focal'), paired by seed, with 95%% intervals",
    )
    parser.add_argument(
        "--holm",
        nargs="?",
        const="datasets",
        choices=HOLM_FAMILIES,
        metavar="{datasets,methods}",
        help="with --paired-against: Holm-adjusted p-values and Bonferroni-widened intervals over a family "
        "of comparisons, per metric: 'datasets' (the default of a bare --holm), the data sets (regimes) each "
        "method was compared on; 'methods', the methods compared with METHOD on each data set and model",
    )
    parser.add_argument(
        "--per-run",
        action="store_true",
        help="with --format csv: one line per run and evaluation step instead of the tables "
        "(what a study keeps in the repository)",
    )
    parser.add_argument("--from-csv", metavar="FILE", help="build the report from a --per-run CSV instead of --logdir")
    parser.add_argument(
        "--decision",
        metavar="SWEEP",
        help="execute the decision rule fixed in the sweep file's 'decision:' block on the study's runs "
        "(from --from-csv or --logdir): Holm-corrected paired comparisons and their outcomes, the prediction "
        "(HOLDS / FAILS / not decided), descriptive and exploratory contrasts, per-class IoU; an incomplete "
        "study is named as such and its verdicts labelled provisional (markdown or csv)",
    )
    args = parser.parse_args(argv)
    failure = None
    try:
        if args.decision is not None:
            text = decision_text(args)
        else:
            text = report(
                args.logdir,
                args.format,
                args.split or "val",
                args.runs,
                args.paired_against,
                args.holm,
                args.per_run,
                args.from_csv,
            )
    except IncompleteReport as error:  # the other tables are still worth having
        text, failure = error.text, error
    except ValueError as error:
        parser.exit(2, f"pat-seg report: error: {error}\n")
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if failure is not None:
        parser.exit(2, f"pat-seg report: error: {failure}\n")


if __name__ == "__main__":
    main()
