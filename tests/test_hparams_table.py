"""TensorBoard's HParams table, as TensorBoard itself builds it from the event files, and hparams.yaml.

The table is read with TensorBoard's own hparams plugin (the handlers behind its HTTP routes), so the
tests see the columns and rows the browser would get, whichever run TensorBoard happens to read first.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups, metadata
from tensorboard_utils import read_scalars
from test_run_safety import TINY_DATA, pat_seg
from torch.utils.tensorboard import SummaryWriter

from pat_seg.atomic_files import write_atomically
from pat_seg.experiments.run_summary import declared_columns, hparams_summaries, hparams_summary
from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES
from pat_seg.models import PAPER_MODELS

# Arguments a config never sets by hand: linked from the data module, or a code path (docs/losses.md).
FROM_THE_DATA = {"num_classes", "in_channels", "ignore_index", "class_counts", "class_presence", "implementation"}


def hparams_table(logdir: Path) -> tuple[api_pb2.Experiment, dict[str, dict[str, object]]]:
    """The experiment TensorBoard serves for ``logdir`` and each run's row (run name -> column -> value)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    )
    request = RequestContext()
    experiment = get_experiment.Handler(request, context, "", api_pb2.GetExperimentRequest(include_metrics=True)).run()
    columns = [api_pb2.ColParams(hparam=info.name) for info in experiment.hparam_infos]
    columns += [api_pb2.ColParams(metric=info.name) for info in experiment.metric_infos]
    groups = list_session_groups.Handler(
        request,
        context,
        "",
        api_pb2.ListSessionGroupsRequest(
            col_params=columns, allowed_statuses=list(api_pb2.Status.values()), start_index=0, slice_size=100
        ),
    ).run()
    rows: dict[str, dict[str, object]] = {}
    for group in groups.session_groups:
        (session,) = group.sessions  # one row per run
        row: dict[str, object] = {
            name: getattr(value, str(value.WhichOneof("kind"))) for name, value in group.hparams.items()
        }
        row.update({metric.name.tag: metric.value for metric in group.metric_values})
        rows[session.name] = row
    return experiment, rows


def declared_experiment(run_dir: Path) -> api_pb2.Experiment:
    """The ``_hparams_/experiment`` declaration in ``run_dir``'s event files, read on its own."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return metadata.parse_experiment_plugin_data(accumulator.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG])


def tiny_config(loss: str, **loss_args: object) -> dict:
    return {
        "seed_everything": 3,
        "model": {
            "model": {
                "class_path": "pat_seg.models.UNet",
                "init_args": {"in_channels": 3, "base_channels": 4, "depth": 1},
            },
            "loss": {"class_path": f"pat_seg.losses.{loss}", "init_args": {"ignore_index": 255, **loss_args}},
        },
        "data": {"class_path": "pat_seg.data.SyntheticLongTailDataModule", "init_args": {"seed": 0}},
    }


def test_every_loss_and_network_argument_that_identifies_a_run_is_a_declared_column() -> None:
    columns = declared_columns()
    for loss in (*PAPER_LOSSES, *BEYOND_PAPER_LOSSES):
        arguments = set(inspect.signature(loss).parameters) - FROM_THE_DATA
        assert {f"loss/{name}" for name in arguments} <= set(columns), loss.__name__
    for network in PAPER_MODELS:
        arguments = set(inspect.signature(network).parameters) - FROM_THE_DATA
        assert {f"model/{name}" for name in arguments} <= set(columns), network.__name__
    assert {"model", "loss", "data", "seed", "data/seed", "loss/temperature", "model/backbone"} <= set(columns)
    assert not {f"loss/{name}" for name in FROM_THE_DATA} & set(columns)
    # TensorBoard prints numbers to 5 significant digits: integers are declared (and written) as text.
    assert columns["seed"] == columns["model/depth"] == api_pb2.DATA_TYPE_STRING
    assert columns["loss/temperature"] == api_pb2.DATA_TYPE_FLOAT64
    assert columns["loss/confidence_weight"] == api_pb2.DATA_TYPE_BOOL


def test_a_run_read_first_without_the_losss_arguments_hides_no_column(tmp_path: Path) -> None:
    """TensorBoard takes the columns from the first declaration it reads: a CE run read before two PAT
    runs must still declare the temperature, and each PAT row shows its own."""
    for name, config in {
        "a_ce": tiny_config("CrossEntropyLoss", reduction="mean"),
        "b_pat_t5": tiny_config("PATLoss", temperature=5.0, confidence_weight=False),
        "c_pat_t20": tiny_config("PATLoss", temperature=20.0),
        "d_own_network": {
            **tiny_config("PATLoss"),
            "model": {"model": {"class_path": "lab.Net", "init_args": {"width": 7}}},
        },
    }.items():
        params, _ = hparams_summary(config, {})
        writer = SummaryWriter(str(tmp_path / name))
        for summary in hparams_summaries(params):
            writer._get_file_writer().add_summary(summary, 1)
        writer.add_scalar("hp/miou", 0.25, 1)
        writer.close()
    experiment, rows = hparams_table(tmp_path)
    assert declared_experiment(tmp_path / "a_ce") == declared_experiment(tmp_path / "c_pat_t20")
    assert "loss/temperature" in [info.name for info in experiment.hparam_infos]
    assert rows["b_pat_t5"]["loss/temperature"] == 5.0 and rows["c_pat_t20"]["loss/temperature"] == 20.0
    assert "loss/temperature" not in rows["a_ce"]
    assert rows["a_ce"]["seed"] == "3" and rows["a_ce"]["model/base_channels"] == "4"
    assert rows["b_pat_t5"]["loss/confidence_weight"] is False  # a switch: a checkbox, not 0.0000
    assert rows["a_ce"]["hp/miou"] == 0.25
    # A network of the user's own: its arguments are declared by its own run (the only place they can be).
    assert "model/width" in [info.name for info in declared_experiment(tmp_path / "d_own_network").hparam_infos]
    assert rows["d_own_network"]["model"] == "Net" and rows["d_own_network"]["model/width"] == "7"


def test_a_file_rewritten_atomically_keeps_the_mode_a_plain_write_gives(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("a: 1\n")
    target = tmp_path / "hparams.yaml"
    write_atomically(target, lambda file: file.write(b"a: 2\n"))
    assert yaml.safe_load(target.read_text()) == {"a": 2}
    assert target.stat().st_mode == plain.stat().st_mode  # readable by whoever could read the logger's file
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hparams.yaml", "plain.yaml"]


@pytest.fixture(scope="module")
def two_pat_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pat-seg fit`` twice, PAT with T = 5 (seed 3) and T = 20 (seed 4), into one logdir."""
    root = tmp_path_factory.mktemp("hparams_table")
    tiny = [f"--data.{key}={value}" for key, value in TINY_DATA.items()] + [
        "--model.model.init_args.base_channels=4",
        "--model.model.init_args.depth=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu",
    ]
    for name, temperature, seed in (("pat_t5", 5, 3), ("pat_t20", 20, 4)):
        result = pat_seg(
            "fit", *tiny, f"--name={name}", f"--model.loss.init_args.temperature={temperature}",
            f"--seed_everything={seed}", cwd=root,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    return root / "lightning_logs"


@pytest.mark.slow
def test_two_runs_fitted_by_the_console_script_show_their_own_temperature_and_integer_seeds(two_pat_runs: Path) -> None:
    experiment, rows = hparams_table(two_pat_runs)
    first, second = (two_pat_runs / name / "version_0" for name in ("pat_t5", "pat_t20"))
    assert declared_experiment(first) == declared_experiment(second)  # whichever is read first, same columns
    assert {"loss/temperature", "model/base_channels", "model/depth", "seed"} <= {
        i.name for i in experiment.hparam_infos
    }
    assert {metric.name.tag for metric in experiment.metric_infos} == {"hp/miou", "hp/miou_head", "hp/miou_tail"}
    t5, t20 = rows["pat_t5/version_0"], rows["pat_t20/version_0"]
    assert (t5["loss/temperature"], t20["loss/temperature"]) == (5.0, 20.0)
    assert (t5["seed"], t20["seed"], t5["data/seed"]) == ("3", "4", "0")  # text: shown as 3, not 3.0000
    assert (t5["model"], t5["model/base_channels"], t5["model/depth"]) == ("UNet", "4", "1")


@pytest.mark.slow
def test_hparams_yaml_holds_the_summary_with_the_event_files_last_validation_miou(two_pat_runs: Path) -> None:
    run = two_pat_runs / "pat_t5" / "version_0"
    recorded = yaml.safe_load((run / "hparams.yaml").read_text())
    scalars = read_scalars(run)
    summary = recorded["summary"]
    for tag in ("miou", "miou_head", "miou_tail"):
        assert summary["metrics"][f"hp/{tag}"] == pytest.approx(scalars[f"val/{tag}"][-1], rel=1e-6)
        assert scalars[f"hp/{tag}"] == [pytest.approx(summary["metrics"][f"hp/{tag}"], rel=1e-6)]
    assert summary["parameters"]["loss/temperature"] == 5.0 and summary["parameters"]["seed"] == 3
    assert recorded["num_classes"] == 9 and len(recorded["class_counts"]) == 9  # what the logger wrote is kept
    assert not list(run.glob(".hparams.yaml.*"))  # no temporary file left
