"""The method labels `pat-seg report` prints for the paper's eight losses with their configs/loss/*.yaml
settings, keyed by the name a sweep gives each (its config's suffix), written out by hand."""

from __future__ import annotations

LOSS_LABELS = {
    "ce": "CE",
    "focal": "Focal (gamma=2)",
    "cb": "CB",
    "cbfocal": "CBFocal",
    "bms": "BMS",
    "ldam": "LDAM (m=0.5, s=20)",
    "blv": "BLV (sigma=0.5)",
    "pat": "PAT (T=20)",
}
