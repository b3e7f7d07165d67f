"""Text generation: decode a ``TransformerLM`` one token at a time.

``iter_generate(model, prompt_ids, max_new_tokens, ...)`` yields new token ids as they
are chosen (for streaming); ``generate(...)`` collects them into a list. Each token is
drawn by ``sample_next(logits, temperature, top_p, generator)``:

- ``temperature == 0`` is greedy decoding (the argmax, the first one on a tie);
- otherwise the logits are divided by ``temperature`` and softmaxed, and with
  ``top_p < 1`` only the *nucleus* is kept: the smallest set of most probable tokens
  whose probabilities add up to at least ``top_p`` (never empty), renormalised;
- the draw uses a ``torch.Generator`` (CPU), so the same seed gives the same completion.

Generation stops after ``max_new_tokens`` tokens or when the model picks a stop token
(``eot_id``: one id or several). The stop token is not yielded, so a completion shorter
than ``max_new_tokens`` ended at a stop token.

**The KV cache.** With ``use_cache=True`` the prompt is run through the model once
(filling each layer's keys and values); after that each new token is one position
through the cache instead of a forward over the whole sequence.

**Longer than the context.** The model sees a *window* of at most ``context_length``
tokens, and token ``window[j]`` is always at RoPE position ``j`` (positions never exceed
the table). When the window is full and another token arrives, the window moves forward
by ``window_slide`` tokens (default 1: the model always sees the last ``context_length``
tokens, as nanoGPT-style generation does). Both modes follow the same rule, and the
cached mode rebuilds its cache by one forward over the new window — the very forward the
uncached mode runs — so cached and uncached generation agree across the boundary. A
cache cannot just drop its oldest entry: every cached key and value above the first
layer was computed attending to that token. So with ``window_slide=1``, once the window
is full each token costs a full window forward in both modes; a larger ``window_slide``
keeps ``window_slide - 1`` cheap cached steps per rebuild, at the price of the model
seeing only ``context_length + 1 - window_slide`` tokens right after each move.
"""

from __future__ import annotations

import codecs
import math
import operator
from collections.abc import Iterable, Iterator, Sequence

import torch

from lm.errors import LMError


class NonFiniteLogitsError(LMError):
    """The model produced NaN (or +inf) logits: its weights are broken, e.g. a diverged run."""


def check_prompt(prompt_ids: Iterable[int], vocab_size: int) -> list[int]:
    """The prompt as a list of ints, checked: non-empty, every id in ``0..vocab_size-1``."""
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.reshape(-1).tolist()
    elif hasattr(prompt_ids, "tolist"):  # numpy
        prompt_ids = prompt_ids.tolist()
    ids = list(prompt_ids)
    if not ids:
        raise LMError(
            "the prompt is empty: generation needs at least one token to condition on; "
            "pass a non-empty prompt (e.g. a few words, or the <|endoftext|> id to start a document)"
        )
    for k, i in enumerate(ids):
        try:
            if isinstance(i, bool):
                raise TypeError
            ids[k] = i = operator.index(i)
        except TypeError:
            raise LMError(
                f"prompt token at position {k} is {i!r}, not an integer token id"
            ) from None
        if not 0 <= i < vocab_size:
            raise LMError(
                f"prompt token {i} at position {k} is outside the model's vocabulary "
                f"(ids 0..{vocab_size - 1}); encode the prompt with the tokenizer the model was trained with"
            )
    return ids


def _check_settings(temperature: float, top_p: float) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)) or temperature < 0:
        raise LMError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise LMError(f"top_p must be in (0, 1] (1 = no nucleus filtering), got {top_p!r}")


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask of the nucleus of a 1-D distribution ``probs``: the smallest set of
    most probable tokens whose total probability is at least ``top_p``.

    A token belongs to it when the probability of the tokens ranked above it is still
    below ``top_p``; the most probable token always does. Ties are ranked by id (a stable
    sort), so the top token is the argmax.
    """
    sorted_p, order = torch.sort(probs, descending=True, stable=True)
    mass_above = torch.cumsum(sorted_p, dim=0) - sorted_p
    keep_sorted = mass_above < top_p
    keep_sorted[0] = True
    mask = torch.zeros_like(keep_sorted)
    mask[order] = keep_sorted
    return mask


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """One token id drawn from 1-D ``logits`` (see the module docstring for the rules).

    ``generator`` is a CPU ``torch.Generator`` (``None``: torch's global RNG). The draw
    always happens on the CPU, so a seed gives the same token on any device.
    """
    _check_settings(temperature, top_p)
    logits = logits.detach().reshape(-1).float().cpu()
    if torch.isnan(logits).any() or torch.isposinf(logits).any() or torch.isneginf(logits).all():
        raise NonFiniteLogitsError(
            "the model's logits are not finite (NaN or inf): its weights are broken, as after a "
            "diverged training run; generate from a checkpoint of a run that trained normally"
        )
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        probs = torch.where(nucleus_mask(probs, top_p), probs, torch.zeros_like(probs))
    return int(torch.multinomial(probs, 1, generator=generator))


def _stop_set(eot_id: int | Iterable[int] | None) -> frozenset[int]:
    if eot_id is None:
        return frozenset()
    if isinstance(eot_id, int):
        return frozenset((eot_id,))
    return frozenset(int(i) for i in eot_id)


def iter_generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eot_id: int | Iterable[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    window_slide: int = 1,
    vocab_limit: int | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids continuing ``prompt_ids``.

    ``seed`` seeds a fresh CPU generator; pass ``generator`` instead to continue a stream
    of your own (with neither, torch's global RNG is used). A stop token (``eot_id``) ends
    the generation and is not yielded. The model is put in eval mode; no gradients are
    kept. Settings and the prompt are checked before the first token (an ``LMError``).
    ``vocab_limit`` restricts the draw to ids below it: a model's embedding table may be
    larger than its tokenizer's vocabulary (BPE training stops early when no pair is
    left), and ids past the tokenizer's have no text.
    """
    vocab_size = model.vocab_size
    context = model.context_length
    ids = check_prompt(prompt_ids, vocab_size)
    _check_settings(temperature, top_p)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise LMError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if (
        isinstance(window_slide, bool)
        or not isinstance(window_slide, int)
        or not 1 <= window_slide <= context
    ):
        raise LMError(
            f"window_slide must be an integer in 1..context_length ({context}), got {window_slide!r}"
        )
    if vocab_limit is not None and not (
        isinstance(vocab_limit, int) and not isinstance(vocab_limit, bool) and 1 <= vocab_limit
    ):
        raise LMError(f"vocab_limit must be a positive integer, got {vocab_limit!r}")
    if vocab_limit is not None and vocab_limit > vocab_size:
        raise LMError(
            f"the tokenizer has {vocab_limit} tokens but the model only {vocab_size}: "
            "they do not belong together; use the tokenizer the run was trained with"
        )
    stop = _stop_set(eot_id)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return _generate(
        model,
        ids,
        max_new_tokens,
        temperature,
        top_p,
        stop,
        generator,
        use_cache,
        window_slide,
        vocab_limit,
    )


def _generate(
    model, ids, max_new_tokens, temperature, top_p, stop, generator, use_cache, slide, limit
):
    # A generator function of its own, so that the checks above run at the call, not at
    # the first next(). Grad mode is thread-local state: it is switched off around each
    # step only, never across a yield (which would leak it into the caller).
    model.eval()
    device = next(model.parameters()).device
    context = model.context_length
    start = max(0, len(ids) - context)  # the window is ids[start:], at positions 0..
    cache = None  # None: (re)build from the window on the next step
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            if not use_cache:
                window = torch.tensor(ids[start:], device=device)
                logits = model(window[None])[0, -1]
            elif cache is None:
                cache = model.new_kv_cache()
                window = torch.tensor(ids[start:], device=device)
                logits = model(window[None], kv_cache=cache)[0, -1]
            else:
                last = torch.tensor([ids[-1]], device=device)
                logits = model(last[None], kv_cache=cache)[0, -1]
            token = sample_next(logits[:limit], temperature, top_p, generator)
        if token in stop:
            return
        yield token
        ids.append(token)
        if len(ids) - start > context:  # the window is full: move it
            start += slide
            cache = None


def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eot_id: int | Iterable[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    window_slide: int = 1,
    vocab_limit: int | None = None,
) -> list[int]:
    """The new token ids continuing ``prompt_ids`` (the prompt not included); see ``iter_generate``."""
    return list(
        iter_generate(
            model,
            prompt_ids,
            max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            eot_id=eot_id,
            seed=seed,
            generator=generator,
            use_cache=use_cache,
            window_slide=window_slide,
            vocab_limit=vocab_limit,
        )
    )


def stream_text(token_bytes: Iterable[bytes]) -> Iterator[str]:
    """Text pieces from the bytes of successive tokens, each piece complete UTF-8.

    A character split across tokens is held back until its last byte arrives; invalid
    bytes become U+FFFD. The pieces join to ``b"".join(token_bytes).decode("utf-8",
    errors="replace")``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for b in token_bytes:
        piece = decoder.decode(b)
        if piece:
            yield piece
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
