"""Generation: cached == uncached (also past the context), greedy == argmax, seeded sampling,
the nucleus, stop tokens, streaming text, bad input."""

import copy
import math

import pytest
import torch

from lm.errors import LMError
from lm.inference.generate import (
    NonFiniteLogitsError,
    generate,
    iter_generate,
    nucleus_mask,
    sample_next,
    stream_text,
)
from lm.model import TransformerLM

VOCAB, CONTEXT = 40, 12


@pytest.fixture(scope="module", params=["reference", "sdpa"])
def model(request):
    torch.manual_seed(0)
    return TransformerLM(VOCAB, CONTEXT, 32, 2, 4, 64, 10000.0, attention=request.param).eval()


def _prompt(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n,), generator=g).tolist()


def _reference_greedy(model, prompt, n):
    """Greedy decoding written out: a full forward over the last CONTEXT tokens per token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor(ids[-CONTEXT:])[None])[0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt) :]


@pytest.mark.parametrize("prompt_len", [1, 5, CONTEXT - 1, CONTEXT, CONTEXT + 7])
def test_greedy_cached_equals_uncached_and_reference_across_the_window(model, prompt_len):
    prompt = _prompt(prompt_len)
    n = 2 * CONTEXT + 3  # well past the context: the window slides many times
    cached = generate(model, prompt, n, temperature=0)
    uncached = generate(model, prompt, n, temperature=0, use_cache=False)
    assert cached == uncached == _reference_greedy(model, prompt, n)
    assert len(cached) == n


def test_temperature_zero_is_the_argmax_of_a_full_forward(model):
    prompt = _prompt(6)
    with torch.no_grad():
        expected = int(torch.argmax(model(torch.tensor(prompt)[None])[0, -1]))
    assert generate(model, prompt, 1, temperature=0) == [expected]


def _forward_lengths(model, fn):
    lengths = []
    handle = model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[-1]))
    try:
        fn()
    finally:
        handle.remove()
    return lengths


def test_the_cache_feeds_one_token_per_step_until_the_window_is_full(model):
    prompt = _prompt(5)
    lengths = _forward_lengths(model, lambda: generate(model, prompt, 10, temperature=0))
    # prompt once, then one token per step; after the 8th new token the window (12) is full
    # and, sliding by one, every step is a forward over the last 12 tokens
    assert lengths == [5, 1, 1, 1, 1, 1, 1, 1, 12, 12]
    uncached = _forward_lengths(
        model, lambda: generate(model, prompt, 10, temperature=0, use_cache=False)
    )
    assert uncached == [5, 6, 7, 8, 9, 10, 11, 12, 12, 12]


def test_window_slide_keeps_cached_steps_and_matches_uncached(model):
    prompt = _prompt(10)
    lengths = _forward_lengths(
        model, lambda: generate(model, prompt, 12, temperature=0, window_slide=4)
    )
    # full at 12 tokens; the 13th moves the window by 4 (9 tokens), then 3 cached steps
    assert lengths == [10, 1, 1, 9, 1, 1, 1, 9, 1, 1, 1, 9]
    for slide in (1, 4, CONTEXT):
        a = generate(model, prompt, 30, temperature=1.0, seed=2, window_slide=slide)
        b = generate(
            model, prompt, 30, temperature=1.0, seed=2, window_slide=slide, use_cache=False
        )
        assert a == b


def test_seeded_sampling_is_reproducible_and_seeds_differ(model):
    prompt = _prompt(4)
    a = generate(model, prompt, 30, temperature=1.0, seed=7)
    assert a == generate(model, prompt, 30, temperature=1.0, seed=7)
    assert a == generate(
        model, prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(7)
    )
    assert a == generate(model, prompt, 30, temperature=1.0, seed=7, use_cache=False)
    assert a != generate(model, prompt, 30, temperature=1.0, seed=8)
    # sampling at temperature 1 on a random model does not collapse to greedy
    assert a != generate(model, prompt, 30, temperature=0)


def test_tiny_top_p_is_greedy(model):
    prompt = _prompt(3)
    greedy = generate(model, prompt, 20, temperature=0)
    for seed in range(3):
        assert generate(model, prompt, 20, temperature=1.5, top_p=1e-9, seed=seed) == greedy


def _reference_nucleus(probs, p):
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            break
    return kept


def test_nucleus_mask_against_a_written_out_nucleus():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = 2 + trial % 30
        probs = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64) * 3, dim=0)
        p = float(torch.rand((), generator=g, dtype=torch.float64))
        mask = nucleus_mask(probs, p)
        assert {i for i in range(n) if mask[i]} == _reference_nucleus(probs.tolist(), p)


def test_top_p_sampling_stays_in_the_nucleus_with_the_renormalised_odds():
    probs = torch.tensor([0.1, 0.4, 0.05, 0.25, 0.2])  # nucleus at 0.6: tokens 1 and 3 (0.65)
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    draws = [sample_next(logits, 1.0, 0.6, g) for _ in range(3000)]
    assert set(draws) == {1, 3}
    share = draws.count(1) / len(draws)
    assert abs(share - 0.4 / 0.65) < 0.04
    assert {sample_next(logits, 1.0, 0.3, g) for _ in range(200)} == {1}
    # without the nucleus every token shows up; temperature 0 is the argmax
    assert set(sample_next(logits, 1.0, 1.0, g) for _ in range(2000)) == set(range(5))
    assert sample_next(logits, 0.0) == 1


def test_temperature_sharpens_the_sampling_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0])
    g = torch.Generator().manual_seed(1)
    for t in (0.5, 2.0):
        draws = [sample_next(logits, t, 1.0, g) for _ in range(4000)]
        expected = torch.softmax(logits / t, 0)
        for k in range(3):
            assert abs(draws.count(k) / len(draws) - float(expected[k])) < 0.03


def test_non_finite_logits_raise_a_clear_error():
    with pytest.raises(NonFiniteLogitsError, match="diverged"):
        sample_next(torch.tensor([0.0, math.nan, 1.0]))
    with pytest.raises(NonFiniteLogitsError):
        sample_next(torch.tensor([0.0, math.inf]), temperature=0)
    assert sample_next(torch.tensor([-math.inf, 0.0, -math.inf])) == 1  # -inf = impossible


def test_generation_stops_at_the_stop_token_without_yielding_it(model):
    prompt = _prompt(5)
    greedy = generate(model, prompt, 20, temperature=0)
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    assert generate(model, prompt, 20, temperature=0, eot_id=greedy[k]) == greedy[:k]
    assert generate(model, prompt, 20, temperature=0, eot_id=[VOCAB + 5, greedy[0]]) == []
    assert generate(model, prompt, 0) == []


def test_bad_prompts_and_settings_raise_at_the_call(model):
    with pytest.raises(LMError, match="empty"):
        iter_generate(model, [], 5)
    with pytest.raises(LMError, match=r"prompt token 40 at position 1 is outside.*0\.\.39"):
        iter_generate(model, [3, VOCAB], 5)
    with pytest.raises(LMError, match="outside"):
        generate(model, [-1], 5)
    with pytest.raises(LMError, match="not an integer"):
        generate(model, [1, "a"], 5)
    with pytest.raises(LMError, match="temperature"):
        iter_generate(model, [1], 5, temperature=-1)
    with pytest.raises(LMError, match="top_p"):
        iter_generate(model, [1], 5, top_p=0)
    with pytest.raises(LMError, match="max_new_tokens"):
        iter_generate(model, [1], -1)
    with pytest.raises(LMError, match="window_slide"):
        iter_generate(model, [1], 5, window_slide=CONTEXT + 1)
    # tensors and numpy ints are fine
    assert generate(model, torch.tensor([1, 2]), 3, temperature=0) == generate(
        model, [1, 2], 3, temperature=0
    )


def test_streaming_leaves_grad_mode_alone(model):
    it = iter_generate(model, [1, 2, 3], 5, temperature=0)
    next(it)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert len(list(it)) == 4


def test_stream_text_holds_back_split_characters():
    text = "héllo wörld — 日本語 🙂 end"
    data = text.encode("utf-8")
    g = torch.Generator().manual_seed(0)
    for _ in range(50):  # random cuts into "tokens", through multi-byte characters
        cuts = sorted(torch.randint(0, len(data), (6,), generator=g).tolist())
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        pieces = list(stream_text(parts))
        assert "".join(pieces) == text
        assert all(pieces) and "\ufffd" not in "".join(pieces)
    broken = [b"ab", b"\xe6\x97", b"c", b"\xff", b"\xe6"]
    assert "".join(stream_text(broken)) == b"".join(broken).decode("utf-8", errors="replace")


def test_vocab_limit_keeps_draws_inside_the_tokenizer_vocabulary(model):
    # the tokenizer stopped early: ids >= limit exist in the model but have no text
    limit = 7
    model = copy.deepcopy(model)  # the fixture is shared: change a copy
    with torch.no_grad():
        model.lm_head.weight[limit:] += 5.0  # make the forbidden ids the likeliest
    ids = generate(model, _prompt(4), 40, temperature=1.0, seed=0, vocab_limit=limit)
    assert ids and max(ids) < limit
    greedy = generate(model, _prompt(4), 10, temperature=0.0, vocab_limit=limit)
    assert max(greedy) < limit
    with pytest.raises(LMError, match="do not belong together"):
        generate(model, _prompt(4), 1, vocab_limit=model.vocab_size + 1)
