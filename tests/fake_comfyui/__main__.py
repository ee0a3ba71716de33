"""Run the fake ComfyUI standalone: `python -m tests.fake_comfyui --port 8188 --latency 2`."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from tests.fake_comfyui.server import FakeComfyUI


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake ComfyUI 0.3.75 server for trying Reverie without a GPU.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per job (default 2.0)")
    parser.add_argument("--jitter", type=float, default=0.0, help="+/- seconds of random latency")
    parser.add_argument("--root", type=Path, default=None, help="folder for input/output/temp (default: temp dir)")
    parser.add_argument("--no-websocket-node", action="store_true", help="do not offer SaveImageWebsocket")
    parser.add_argument("--ws-lag", type=float, default=0.0,
                        help="seconds WebSocket messages trail the /history write (a fresh real server: up to ~1)")
    args = parser.parse_args()
    fake = FakeComfyUI(root=args.root, port=args.port, latency=args.latency, jitter=args.jitter,
                       websocket_node=not args.no_websocket_node, ws_lag=args.ws_lag)
    fake.start()
    print(f"fake ComfyUI listening on {fake.url} (files under {fake.root}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
