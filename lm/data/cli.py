"""CLI for the data stage: ``lm fetch``, ``lm download``, ``lm generate-demo``, ``lm inspect-text``."""

from __future__ import annotations

import json

from lm.io import write_json
from lm.progress import add_progress_argument
from lm.provenance import with_provenance


def _progress_arguments(p) -> None:
    add_progress_argument(p)
    p.add_argument(
        "--quiet", dest="progress", action="store_const", const="none", help="no progress"
    )


def _fetch(args) -> int:
    from lm.data.sources import fetch

    try:
        source = json.loads(args.source)
    except json.JSONDecodeError as e:
        from lm.errors import LMError

        raise LMError(f"--source is not valid JSON ({e}): {args.source!r}") from None
    summary = fetch(source, args.out, what=args.what, progress=args.progress)
    print(json.dumps(summary))
    return 0


def _download(args) -> int:
    from lm.data.download import download

    summary = download(args.url, args.out, args.sha256, what=args.url, progress=args.progress)
    print(json.dumps(summary))
    return 0


def _generate(args) -> int:
    from lm.data.demo import write_corpus

    print(json.dumps(write_corpus(args.out, args.documents, args.seed)))
    return 0


def _inspect(args) -> int:
    from lm.data.text import inspect_text

    stats = inspect_text(
        args.path,
        separator=args.separator,
        what=args.what or str(args.path),
        progress=args.progress,
    )
    if args.out:
        write_json(args.out, with_provenance(stats, "inspect-text"))
    print(json.dumps(stats))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="materialise one dataset split from its config (url: or generate:)"
    )
    p.add_argument(
        "--source", required=True, help='the split\'s config as JSON, e.g. \'{"url": "..."}\''
    )
    p.add_argument("--what", default="the split", help="config key to name in errors")
    p.add_argument("--out", required=True)
    _progress_arguments(p)
    p.set_defaults(func=_fetch)

    p = sub.add_parser(
        "download", help="download a URL (.gz decompressed), optionally checking sha256"
    )
    p.add_argument("url")
    p.add_argument("--out", required=True)
    p.add_argument("--sha256")
    _progress_arguments(p)
    p.set_defaults(func=_download)

    p = sub.add_parser("generate-demo", help="write the built-in demo corpus of short stories")
    p.add_argument("--documents", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "inspect-text", help="check a corpus is UTF-8 and count bytes/lines/documents"
    )
    p.add_argument("path")
    p.add_argument("--separator", default="<|endoftext|>")
    p.add_argument("--what", help="config key to name in errors")
    p.add_argument("--out", help="write the counts as JSON here")
    _progress_arguments(p)
    p.set_defaults(func=_inspect)
