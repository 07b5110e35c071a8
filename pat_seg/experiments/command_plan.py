"""What a ``pat-seg`` command will do to the runs on disk, decided before any of it happens.

:func:`plan_command` takes the command as configured (subcommand, ``--ckpt_path``, the run its logger
points at, the config it would save) and returns a :class:`CommandPlan`: the run folder it writes
into, the checkpoint file it loads (read here, once), the TensorBoard purge step of a resumed fit,
where evaluations and predictions go, and the notes to print. Whatever makes the command impossible
-- a run whose saved config differs from the command's, a new fit into a run folder that holds a run,
a checkpoint that is missing, unreadable or already at the end of its budget -- is a :class:`~pat_seg.experiments.run_folder.ResumeError` raised here,
before the Trainer exists, so a refused command writes nothing into any run.

It knows nothing of LightningCLI: tests drive it with folders in a temp dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pat_seg.experiments.checkpoint_files import UnreadableCheckpointError, checkpoints_beside, read_checkpoint
from pat_seg.experiments.class_identity import loss_plumbing
from pat_seg.experiments.run_folder import (
    SUBFOLDERS,
    ResumeError,
    RunFolder,
    covered,
    evaluation_subfolder,
    identity_differences,
    refuse_existing_run,
    run_of,
    run_of_checkpoint,
    runs_with_last_checkpoint,
)

NAMED_CHECKPOINTS = ("last", "best")


@dataclass(frozen=True)
class CommandRequest:
    """A command as configured.

    ``run``: the run its logger points at (``version=None``: the next new one), None when it logs
    elsewhere or not at all. ``config``: the config it would save as ``config.yaml``. ``max_epochs``
    and ``max_steps``: its training budget (None or negative: unlimited). ``image_folder``: the
    user's own images a ``predict`` runs on (None: the data set's test split).
    """

    subcommand: str
    ckpt_path: str | None
    run: RunFolder | None
    config_files: list[str]
    config: dict[str, Any]
    max_epochs: int | None = None
    max_steps: int | None = None
    image_folder: Path | None = None


@dataclass(frozen=True)
class CommandPlan:
    """What the command does: ``run`` it writes into (None: not a TensorBoard run), ``checkpoint`` it
    loads with its ``state`` (read once), ``purge_step`` for TensorBoard, the ``subfolder`` of the run
    an evaluation writes into, and ``warnings`` / ``notes`` to print before it starts."""

    run: RunFolder | None
    checkpoint: Path | None = None
    state: dict[str, Any] | None = field(default=None, repr=False)
    purge_step: int | None = None
    subfolder: str | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def plan_command(request: CommandRequest) -> CommandPlan:
    """The plan of ``request`` (see the module doc), or :class:`ResumeError` naming why it cannot run."""
    if request.subcommand == "fit":
        return _plan_fit(request)
    return _plan_evaluation(request)


def _plan_fit(request: CommandRequest) -> CommandPlan:
    ckpt_path, default = request.ckpt_path, request.run
    if ckpt_path is None:
        refuse_existing_run(default)  # a fixed version (a sweep's run) that holds a run already
        return CommandPlan(default)
    if ckpt_path == "best":
        raise ResumeError("fit continues a run from its last state: give --ckpt_path last or a checkpoint file")
    warnings: list[str] = []
    if ckpt_path == "last":
        if default is None:
            raise ResumeError(
                "--ckpt_path last looks for the run in the TensorBoard logger's folder, but this "
                "command logs elsewhere: give --ckpt_path FILE"
            )
        run = _run_to_continue(default, request.config)
        if run is None:
            raise ResumeError(_nothing_to_continue(default))
        checkpoint, state = _readable_last(run, warnings)
    else:
        checkpoint = Path(ckpt_path)
        run = run_of_checkpoint(checkpoint) or default
        if run is not None and run.path is not None:
            _check_same_run(run, request.config, f"--ckpt_path {checkpoint}")
        state = read_checkpoint(checkpoint)
    epochs, step = _progress(state)
    _check_budget(checkpoint, epochs, step, request.max_epochs, request.max_steps)
    where = run.path if run is not None and run.path is not None else "a new run"
    note = f"resuming {where} from {checkpoint} (epoch {epochs}, global step {step})"
    return CommandPlan(run, checkpoint, state, step, warnings=tuple(warnings), notes=(note,))


def _progress(state: dict[str, Any]) -> tuple[int, int]:
    """How far the run of a checkpoint got: (epochs completed, optimizer steps taken)."""
    epochs = state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    # Lightning restores current_epoch from the completed-epoch counter, not from state["epoch"].
    return int(epochs.get("completed", state.get("epoch", 0))), int(state.get("global_step", 0))


def _run_to_continue(default: RunFolder, config: dict[str, Any]) -> RunFolder | None:
    """The newest run of the experiment whose saved config the command shares (see :func:`_check_same_run`).

    A run with a fixed version (a sweep's grid point) is the only candidate. None when no run of the
    experiment has a last checkpoint; :class:`ResumeError` when some have but none is this config's.
    """
    if default.version is not None:
        if not default.last.parent.is_dir() or not any(default.checkpoints.glob("*.ckpt")):
            return None
        _check_same_run(default, config, "--ckpt_path last")
        return default
    candidates = runs_with_last_checkpoint(default.save_dir, default.experiment)
    refusals = []
    for run in candidates:
        differences = _differences(run, config)
        if not differences:
            return run
        refusals.append(f"  {run.path}: {'; '.join(differences[:3])}{' ...' if len(differences) > 3 else ''}")
    if not candidates:
        return None
    raise ResumeError(
        f"--ckpt_path last: no run of {default.experiment!r} was made with this config, so none can be continued "
        f"(a run may only be given a larger budget, trainer.max_epochs / max_steps). Runs and how they differ:\n"
        + "\n".join(refusals[:5])
        + "\nstart a new run without --ckpt_path, or give --name to name it apart"
    )


def _nothing_to_continue(default: RunFolder) -> str:
    """Why ``--ckpt_path last`` has nothing to continue, and how to start the run afresh instead."""
    if default.path is None:
        return (
            f"--ckpt_path last: no run of {default.experiment!r} under {default.save_dir} has a checkpoint "
            f"yet, so there is nothing to continue; start a new run without --ckpt_path"
        )
    if not default.path.exists():
        return (
            f"--ckpt_path last: run {default.path} does not exist, so there is nothing to continue; "
            f"start it without --ckpt_path"
        )
    return (
        f"--ckpt_path last: run {default.path} has no checkpoint yet (it stopped before its first one), "
        f"so there is nothing to continue; to start it afresh, move its folder away and run the "
        f"command without --ckpt_path"
    )


def _differences(run: RunFolder, config: dict[str, Any]) -> list[str]:
    saved = run.saved_config()
    return [] if saved is None else identity_differences(saved, config, loss_plumbing(saved, config))


def _check_same_run(run: RunFolder, config: dict[str, Any], flag: str) -> None:
    """Refuse to write into ``run`` with a config that would overwrite what the run was."""
    differences = _differences(run, config)
    if differences:
        listed = "\n".join(f"  {difference}" for difference in differences[:8])
        raise ResumeError(
            f"{flag}: run {run.path} was made with another config, and continuing it would "
            f"rewrite it. Its config.yaml -> this command:\n{listed}\ngive the run's own "
            f"config ({run.path}/config.yaml) or start a new run without --ckpt_path"
        )


def _readable_last(run: RunFolder, warnings: list[str]) -> tuple[Path, dict[str, Any]]:
    """``last.ckpt`` of ``run``, or with a warning naming both, the newest readable checkpoint beside it."""
    try:
        return run.last, read_checkpoint(run.last)
    except UnreadableCheckpointError as unreadable:
        for other in checkpoints_beside(run.last):
            try:
                state = read_checkpoint(other)
            except UnreadableCheckpointError:
                continue
            warnings.append(
                f"{run.last} cannot be read ({str(unreadable).splitlines()[0]}); "
                f"--ckpt_path last uses the newest readable checkpoint, {other}"
            )
            return other, state
        raise


def _check_budget(checkpoint: Path, epochs: int, step: int, max_epochs: int | None, max_steps: int | None) -> None:
    """A checkpoint past the budget cannot be continued; one exactly at it has nothing left to do."""
    for flag, done, limit, unit in (
        ("max_epochs", epochs, max_epochs, "completed {} epochs"),
        ("max_steps", step, max_steps, "taken {} optimizer steps"),
    ):
        if limit is not None and limit >= 0 and done >= limit:
            verb = "already finished" if done == limit else "cannot resume"
            raise ResumeError(
                f"{verb} {checkpoint}: it has {unit.format(done)} (epoch {epochs}, global step {step}) and "
                f"--trainer.{flag}={limit}; raise --trainer.{flag} above {done} to train it further"
            )


def _plan_evaluation(request: CommandRequest) -> CommandPlan:
    """validate / test / predict: the checkpoint to score and the run folder its results go into."""
    ckpt_path, warnings = request.ckpt_path, []
    run = run_of(ckpt_path, request.config_files)
    if ckpt_path is None:
        warnings.append(
            f"pat-seg {request.subcommand} without --ckpt_path scores a network with random weights: "
            f"give --ckpt_path best|last with a run's config.yaml, or a checkpoint file"
        )
        checkpoint, state = None, None
    elif ckpt_path in NAMED_CHECKPOINTS:
        if run is None:
            raise ResumeError(
                f"--ckpt_path {ckpt_path} names a checkpoint of a run: give that run's config, e.g. "
                f"--config lightning_logs/<experiment>/version_N/config.yaml, or a checkpoint file"
                f"{_runs_hint(request.run)}"
            )
        checkpoint, state = _named_checkpoint(run, ckpt_path, warnings)
    else:
        checkpoint, state = Path(ckpt_path), read_checkpoint(ckpt_path)
    folder = run if run is not None and run.path is not None else request.run
    if run is not None and run.path is not None and request.subcommand in ("test", "validate"):
        _check_same_loss(run, request.config, request.subcommand)
    subfolder = evaluation_subfolder(request.subcommand, request.image_folder, folder.path if folder else None)
    return CommandPlan(folder, checkpoint, state, subfolder=subfolder, warnings=tuple(warnings))


def _check_same_loss(run: RunFolder, config: dict[str, Any], subcommand: str) -> None:
    """Refuse to write a run's ``test/`` or ``validate/`` with another loss than the run was trained with:
    its loss numbers would be filed under the run as if they were its own."""
    saved = run.saved_config()
    if saved is None:
        return
    differences = [
        difference
        for difference in identity_differences(saved, config, loss_plumbing(saved, config))
        if covered(difference.split(":", 1)[0], ("model.loss",))
    ]
    if not differences:
        return
    listed = "\n".join(f"  {difference}" for difference in differences[:6])
    raise ResumeError(
        f"pat-seg {subcommand}: run {run.path} was trained with the loss {_loss_name(saved)}, this command "
        f"gives {_loss_name(config)}; its {SUBFOLDERS[subcommand]}/ would file the other loss's numbers under "
        f"the run. Its config.yaml -> this command:\n{listed}\n"
        f"to score the run, leave out --model.loss (the run's config.yaml holds its loss); to evaluate "
        f"with another loss on purpose, copy the checkpoint and config.yaml out of the run (cp {run.path}/"
        f"config.yaml other_loss.yaml) and give those: the results go to a run of their own"
    )


def _loss_name(config: dict[str, Any]) -> str:
    """The loss class of a config (its last dotted part), or ``?`` where the config names none."""
    loss = (config.get("model") or {}).get("loss") or {}
    return str(loss.get("class_path", "?")).rsplit(".", 1)[-1] if isinstance(loss, dict) else str(loss)


def _runs_hint(default: RunFolder | None) -> str:
    if default is None:
        return ""
    configs = sorted(default.save_dir.glob("*/*/config.yaml"))[-3:]
    return "" if not configs else "; runs here:\n" + "\n".join(f"  {path}" for path in configs)


def _named_checkpoint(run: RunFolder, which: str, warnings: list[str]) -> tuple[Path, dict[str, Any]]:
    """``last`` -> ``last.ckpt`` (or the newest readable one); ``best`` -> the best the run recorded."""
    if which == "last":
        return _readable_last(run, warnings)
    last = read_checkpoint(run.last)
    best = _best_recorded(last, run.checkpoints)
    if best is None:
        raise ResumeError(
            f"run {run.path} records no best checkpoint in {run.last} (give --ckpt_path last or a checkpoint file)"
        )
    return best, read_checkpoint(best)


def _best_recorded(last: dict[str, Any], folder: Path) -> Path | None:
    """The ``best_model_path`` the run's ``ModelCheckpoint`` recorded, if that file still exists."""
    for key, value in last.get("callbacks", {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            candidate = best if best.is_file() else folder / best.name  # a run folder moved as a whole
            if candidate.is_file():
                return candidate
    return None
