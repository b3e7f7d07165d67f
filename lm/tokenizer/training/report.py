"""The tokenizer training report: ``stats.json`` (machine) and ``report.md`` (human)."""

from __future__ import annotations

from lm.tokenizer.serialization import token_to_str


def longest_tokens(
    vocab: dict[int, bytes], special_tokens: list[str], limit: int = 5
) -> list[dict]:
    """The longest learned token(s) (special tokens excluded), as id, bytes and text."""
    specials = {s.encode("utf-8") for s in special_tokens}
    learned = [(i, t) for i, t in vocab.items() if t not in specials]
    if not learned:
        return []
    longest = max(len(t) for _, t in learned)
    out = []
    for i, t in sorted(learned):
        if len(t) == longest:
            out.append(
                {
                    "id": i,
                    "length_bytes": len(t),
                    "bytes": repr(t),
                    "text": t.decode("utf-8", errors="backslashreplace"),
                    "gpt2_form": token_to_str(t),
                }
            )
            if len(out) == limit:
                break
    return out


def build_stats(vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], stats: dict) -> dict:
    """``stats`` from training, with the longest tokens added."""
    return {**stats, "longest_tokens": longest_tokens(vocab, stats.get("special_tokens", []))}


def _memory(stats: dict) -> str:
    text = f"{stats['peak_rss_mb']:.0f} MiB (main process"
    if stats.get("rss_at_start_mb") is not None:
        text += f", of which {stats['rss_at_start_mb']:.0f} MiB in use before training"
    text += ")"
    if stats.get("peak_rss_workers_mb"):
        text += f"; {stats['peak_rss_workers_mb']:.0f} MiB (largest worker process)"
    return text


def render_markdown(stats: dict) -> str:
    """``report.md`` for a trained tokenizer."""
    early = (
        f" (stopped early: no pair left after {stats['merges']} merges; "
        f"{stats['vocab_size_requested']} requested)"
        if stats.get("stopped_early")
        else ""
    )
    rows = [
        ("input", f"`{stats['input']}`"),
        ("corpus", f"{stats['corpus_bytes']:,} bytes, {stats['documents']:,} documents"),
        ("pre-tokens", f"{stats['pretokens']:,} ({stats['distinct_pretokens']:,} distinct)"),
        ("vocabulary", f"{stats['vocab_size']:,} tokens{early}"),
        ("merges", f"{stats['merges']:,}"),
        ("special tokens", ", ".join(f"`{s}`" for s in stats["special_tokens"]) or "none"),
        (
            "wall time",
            f"{stats['total_seconds']:.2f} s: pre-tokenization {stats['pretokenize_seconds']:.2f} s "
            f"({stats['workers']} worker(s), {stats['chunks']} chunk(s)), merging {stats['merge_seconds']:.2f} s",
        ),
        ("peak memory", _memory(stats)),
    ]
    lines = ["# BPE tokenizer", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    longest = stats.get("longest_tokens", [])
    if longest:
        lines += [
            "",
            f"## Longest token(s): {longest[0]['length_bytes']} bytes",
            "",
            "| id | bytes | text |",
            "| ---: | --- | --- |",
        ]
        for t in longest:
            text = t["text"].replace("|", "\\|").replace("\n", "\\n")
            lines.append(f"| {t['id']} | `{t['bytes']}` | `{text}` |")
    return "\n".join(lines) + "\n"
