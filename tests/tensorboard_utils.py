"""Reading TensorBoard event files in tests, independently of the code that wrote them."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(run_dir: str | Path) -> dict[str, list[float]]:
    """All scalar series of the event files under ``run_dir``, keyed by tag."""
    series: dict[str, list[float]] = {}
    for event_file in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return series
