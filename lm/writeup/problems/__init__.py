"""The problems of CS336 assignment 1 as data: ``PROBLEMS``, in the handout's order.

Each ``Problem`` (see ``spec``) says which role of the plan answers it, the artifacts it
reads and its kind of section, the renderer that writes the answer from them. The
problems and their renderers live by part of the handout:

- ``tokenizer_part``: BPE training on TinyStories and OpenWebText, the tokenizer experiments;
- ``model_part``: the Transformer's resource accounting;
- ``training_part``: the SGD toy's learning rates, the accounting of AdamW training;
- ``experiments_part``: the TinyStories sweeps, generated text, the ablations;
- ``openwebtext_part``: the OpenWebText run and the leaderboard.
"""

from __future__ import annotations

from lm.writeup.problems import (
    experiments_part,
    model_part,
    openwebtext_part,
    tokenizer_part,
    training_part,
)
from lm.writeup.problems.spec import Problem, answer

__all__ = ["PROBLEMS", "Problem", "answer"]

PROBLEMS: tuple[Problem, ...] = (
    *tokenizer_part.PROBLEMS,
    *model_part.PROBLEMS,
    *training_part.PROBLEMS,
    *experiments_part.PROBLEMS,
    *openwebtext_part.PROBLEMS,
)
