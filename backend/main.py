"""Reverie daemon: `python backend/main.py [--max-frames N] [--config PATH]`.

Also `python backend/main.py render ...` (an offline seed walk, backend.render.cli) and
`--install-autostart | --remove-autostart | --autostart-status` (start at login, backend.desktop.autostart).

keyframe (worker thread, ComfyUI or a folder) -> encode -> slerp -> decode (HybridGenerator, this
thread owns the VAE) -> write current_frame.png + status (paced by a monotonic clock here).
Exit codes: 0 = stopped normally (any stop: Ctrl-C, SIGTERM, console close, quit command,
--max-frames), 1 = unexpected failure, 2 = a problem the user must fix (config, inputs, setup).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`python backend/main.py`): make the repo root importable so the
    # `backend.` absolute imports below resolve exactly as they do under `python -m backend.main`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

from backend import __version__  # noqa: E402
from backend.config import Config, ConfigError, DisplayConfig, check_writable, load_config, with_overrides  # noqa: E402
from backend.config_schema import declared  # noqa: E402
from backend.desktop.instance_lock import AlreadyRunning, InstanceLock  # noqa: E402
from backend.logging_setup import adopt_missing_streams, say, setup_logging  # noqa: E402
from backend.shutdown import Shutdown  # noqa: E402

log = logging.getLogger("backend.main")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="reverie", description="Reverie: a desktop window that dreams. Writes output/current_frame.png "
        "for the Rainmeter skin; tune everything in config.yaml.",
        epilog="Render an offline seed walk to MP4 instead: python backend/main.py render --help")
    parser.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                        help="stop after N frames (default: run until stopped)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"config file (default: {DEFAULT_CONFIG.name} beside the backend folder)")
    low, high = declared(DisplayConfig, "fps").range
    parser.add_argument("--fps", type=float, default=None, help=f"override display.fps ({low:g}..{high:g})")
    parser.add_argument("--source", choices=("comfyui", "folder"), default=None,
                        help="override keyframes.source")
    parser.add_argument("--folder", type=Path, default=None, metavar="DIR",
                        help="morph the images of DIR (implies --source folder)")
    parser.add_argument("--vae", default=None, metavar="PATH",
                        help="VAE weights to use, overriding vae.source: a file, the folder of a TAESD pair "
                        "(taesd_encoder.pth + taesd_decoder.pth), or a diffusers VAE folder")
    parser.add_argument("--check", action="store_true",
                        help="check the environment (config, CUDA, ComfyUI, checkpoint, VAE) and exit")
    login = parser.add_mutually_exclusive_group()
    login.add_argument("--install-autostart", dest="autostart", action="store_const", const="install",
                       help="start Reverie at login with this --config (Windows: a Task Scheduler task running "
                       "pythonw 30 s after logon, else a Startup-folder entry; Linux: a systemd user unit) and exit")
    login.add_argument("--remove-autostart", dest="autostart", action="store_const", const="remove",
                       help="undo --install-autostart and exit")
    login.add_argument("--autostart-status", dest="autostart", action="store_const", const="status",
                       help="say whether Reverie starts at login, and how, and exit")
    parser.add_argument("--version", action="version", version=f"Reverie {__version__}")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    adopt_missing_streams()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["render"]:
        from backend.render.cli import main as render_main
        return render_main(argv[1:])
    args = parse_args(argv)
    if args.autostart in ("remove", "status"):  # these need no valid config: a broken one must be removable
        from backend.desktop.autostart import main_autostart
        return main_autostart(args.autostart, args.config)
    overrides = dict(fps=args.fps, source=args.source, folder=str(args.folder) if args.folder else None, vae=args.vae)
    try:
        config = with_overrides(load_config(args.config), **overrides)
    except ConfigError as exc:
        say(str(exc))
        return 2
    if args.check:
        from backend.doctor import run_checks
        return run_checks(config, args.config)
    if args.autostart == "install":  # the config loaded: a login start will not fail on it
        from backend.desktop.autostart import main_autostart
        return main_autostart("install", args.config)
    try:
        check_writable(config, args.config)
    except ConfigError as exc:
        say(str(exc))
        return 2
    # One daemon per output folder, decided before logging starts: the second one must not
    # write a line into the first one's log file.
    lock = InstanceLock(config.display.output_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        say(str(exc))
        return 2
    except OSError as exc:
        say(f"cannot take the lock in {config.display.output_dir}: {exc}; check the folder can be written")
        return 2
    return _run_daemon(config, args, overrides, lock)


def _run_daemon(config: Config, args: argparse.Namespace, overrides: dict, lock: InstanceLock) -> int:
    setup_logging(config.logging.level, config.logging.file, max_bytes=config.logging.max_bytes,
                  backups=config.logging.backups)
    shutdown = Shutdown().install()
    try:
        from backend.daemon import Daemon
        from backend.assembly import UserError
        from backend.parts import Assembly
        try:
            assembly = Assembly(config)  # the run's one Dream, for the keyframe source and the daemon (C3)
            return Daemon(config, args.config, shutdown, overrides=overrides, dream=assembly.dream,
                          build=assembly).run(args.max_frames)
        except UserError as exc:
            log.error("%s", exc)
            return 2
        except Exception:  # a bug, not a user error: full traceback in the log, status "error"
            log.exception("Reverie stopped on an unexpected error")
            return 1
    except KeyboardInterrupt:  # a Ctrl-C before the handlers could take over (during imports)
        return 0
    finally:
        for handler in logging.getLogger().handlers:  # the last lines reach the log before a closing
            handler.flush()                            # console's handler lets Windows end the process
        lock.release()  # before `finished`: a closing console's process may end the moment it is set
        shutdown.finished.set()
        shutdown.uninstall()


if __name__ == "__main__":
    code = main()
    # Skip interpreter teardown: unloading torch is slow on a busy machine, and a stop must finish
    # within a couple of seconds (Windows kills a closing console's process soon after the close event).
    # Everything is already written and closed; flush what remains and leave.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(code)
