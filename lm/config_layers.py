"""Layers of configuration merged key by key, except where keys are alternatives.

The pipeline's config is built from layers, later winning: the repository's
``config.yaml``, each ``--configfile`` in order, then ``--config KEY=VALUE``. A plain
recursive merge is right for most keys, but wrong for keys that are *alternatives* of
each other: a user's ``local.yaml`` that gives ``datasets.owt.train: {path: ...}`` means
"read this file instead of downloading", yet merged key by key the split would hold
both the shipped ``url:`` and the new ``path:``, which the schema rejects.

So a mapping that sets one key of a set of alternatives replaces the alternatives of the
layers below: the other choices are dropped, with their companion keys (``sha256`` goes
with its ``url``). Two alternatives set in the *same* layer stay an error for the schema
to report. :data:`CONFIG_ALTERNATIVES` lists where this applies.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from lm.data.sources import KINDS as SOURCE_KINDS
from lm.training.config import ALTERNATIVES as RUN_ALTERNATIVES
from lm.training.config import SECTIONS as RUN_SECTIONS

ANY = "*"


@dataclass(frozen=True)
class Alternatives:
    """Keys of the mappings at ``where`` that exclude each other.

    ``where`` is a key path from the top of the config; each element is a key, a tuple of
    keys, or :data:`ANY`. ``choices`` maps each alternative to its companion keys, which
    belong to it and go when another alternative replaces it.
    """

    where: tuple[str | tuple[str, ...], ...]
    choices: Mapping[str, tuple[str, ...]]

    def matches(self, path: tuple[str, ...]) -> bool:
        if len(path) != len(self.where):
            return False
        for key, want in zip(path, self.where, strict=True):
            if want != ANY and key != want and not (isinstance(want, tuple) and key in want):
                return False
        return True

    def owned(self, choice: str) -> set[str]:
        """The keys that go with ``choice``: itself and its companions."""
        return {choice, *self.choices[choice]}


def _run_alternatives() -> dict[str, tuple[str, ...]]:
    """Per run section (training, optimizer, schedule), its alternatives, no companions."""
    sections: dict[str, dict[str, tuple[str, ...]]] = {}
    for (section, key), other in RUN_ALTERNATIVES.items():
        sections.setdefault(section, {})[key] = ()
        sections[section][other] = ()
    return sections


def _config_alternatives() -> list[Alternatives]:
    source = {kind: () for kind in SOURCE_KINDS}
    source["url"] = ("sha256",)
    rules = [Alternatives(("datasets", ANY, ("train", "valid")), source)]
    for section, choices in _run_alternatives().items():
        assert section in RUN_SECTIONS, section
        rules.append(Alternatives(("training_defaults", section), choices))
        rules.append(Alternatives(("runs", ANY, section), choices))
    return rules


#: Where the pipeline config has alternatives: a split's source (url + sha256 | path |
#: generate), and in ``training_defaults`` and each run, steps | total_tokens,
#: min_lr | min_lr_ratio, warmup_iters | warmup_ratio.
CONFIG_ALTERNATIVES: list[Alternatives] = _config_alternatives()


def typed_command_line_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """``--config KEY=VALUE`` values with YAML types all the way down.

    Snakemake parses a top-level value as a number or a boolean, but reads a mapping's
    leaves as strings (``generation={max_new_tokens: 64}`` gives ``'64'``); here a leaf that
    YAML reads as a number, boolean or null gets that type, as it would in a config file.
    """

    def typed(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            if parsed is None or isinstance(parsed, bool | int | float):
                return parsed
        return value

    return {key: typed(value) for key, value in dict(values).items()}


def merge_layers(
    layers: Iterable[Mapping[str, Any]],
    alternatives: Iterable[Alternatives] = CONFIG_ALTERNATIVES,
) -> dict[str, Any]:
    """Merge config ``layers`` (later winning) key by key, honouring ``alternatives``.

    Mappings merge recursively; any other value (a list, a number) replaces what the
    layers below had. The layers are not modified.
    """
    rules = list(alternatives)
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            _merge_into(merged, layer, (), rules)
    return merged


def _merge_into(
    acc: dict[str, Any], overlay: Mapping[str, Any], path: tuple[str, ...], rules
) -> None:
    for rule in rules:
        if rule.matches(path):
            chosen = [key for key in overlay if key in rule.choices]
            if chosen:  # this layer picks: drop every alternative below but what it gives
                keep = {k for key in chosen for k in rule.owned(key) if k in overlay}
                for other in rule.choices:
                    for k in rule.owned(other) - keep:
                        acc.pop(k, None)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(acc.get(key), dict):
            _merge_into(acc[key], value, (*path, str(key)), rules)
        elif isinstance(value, Mapping):
            acc[key] = {}
            _merge_into(acc[key], value, (*path, str(key)), rules)
        else:
            acc[key] = copy.deepcopy(value)
