"""``deepmsi serve --run RUN``: the HTTP API and web page for a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a trained run over HTTP (API + web page)",
        description="Serve POST /predict, GET /health and a web page at / for a trained run.",
    )
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="trained run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=200.0,
        help="larger uploads are answered 413 (default 200)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=32,
        help="connections served at once; more are answered 503 (default 32). Each may hold an "
        "upload of up to --max-upload-mb in the temporary folder while it waits its turn",
    )
    from deepmsi.cli.predict import add_asr_options, add_precision_option

    add_asr_options(p)
    add_precision_option(p)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from deepmsi.serve import create_app

    app = create_app(
        args.run_dir,
        max_upload_mb=args.max_upload_mb,
        asr=args.asr,
        vad=args.vad,
        precision=args.precision,
    )
    print(f"serving {args.run_dir} on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        limit_concurrency=args.max_connections,
    )
    return 0
