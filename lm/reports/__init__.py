"""Reports over finished runs: a sweep's runs side by side (:mod:`lm.reports.sweep`),
evaluated runs of different datasets or tokenizers (:mod:`lm.reports.comparison`), their
curves (:mod:`lm.reports.plots`), and the index of everything under ``results/``
(:mod:`lm.reports.index`).

They read what the stages wrote (run directories, ``eval.json``, stats) and import none of
the stages' code, so no training or evaluation depends on them. Reports of one stage stay
with it (the tokenizer's, the accounting's, a run's own curves).
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "load_run": "lm.reports.sweep",
    "sweep_report": "lm.reports.sweep",
    "comparison_report": "lm.reports.comparison",
    "write_index": "lm.reports.index",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
