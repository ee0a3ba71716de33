"""CPU of a paused daemon: how close to zero does Reverie get while the user games?

    python bench/paused_cpu.py [--seconds 60] [--fps 10] [--size 64]

Runs `python backend/main.py` in a child process against the fake ComfyUI (in this process),
lets it play, pauses it the way the skin does (a Pause click written into Control.ini), waits
for status "paused", then reads the child's CPU time (user + system, all threads, psutil) over
`--seconds`. Prints CPU as a share of one core, live and paused, and the keyframe jobs the fake
saw while paused (should be none), and the CPU one check of every pause rule costs here. The
paused figure includes the daemon's own pause-rules thread (a check every `pause.check_every` s)
and its ComfyUI health watch (a tick a second, a probe every 10 s). Target: under 1 % of one core
while paused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def status(out: Path) -> dict:
    try:
        return json.loads((out / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def cpu_share(proc, seconds: float) -> tuple[float, int]:
    """(CPU seconds per wall second, as % of one core; thread count at the end)."""
    before, started = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, wall = proc.cpu_times(), time.monotonic() - started
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / wall, proc.num_threads()


def rules_cost(checks: int = 50) -> float:
    """CPU seconds of one PauseRules.check() on this machine's platform, every rule on (median)."""
    import statistics

    from backend.desktop.platform import default_platform
    from backend.desktop.rules import PauseRules, PauseSettings

    rules = PauseRules(PauseSettings(processes=("game.exe", "resolve.exe")), default_platform())
    costs = []
    for _ in range(checks):
        started = time.process_time()
        rules.check()
        costs.append(time.process_time() - started)
    return statistics.median(costs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="paused measurement window (default 60)")
    parser.add_argument("--live-seconds", type=float, default=15.0, help="live window for contrast (default 15)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    args = parser.parse_args()

    import psutil

    from tests.fake_comfyui import FakeComfyUI
    from tests.reliability.conftest import save_tiny_vae, write_config
    from tests.test_control import TEMPLATE, Skin

    work = Path(tempfile.mkdtemp(prefix="reverie-paused-cpu-"))
    out = work / "out"
    out.mkdir()
    control = out / "control.ini"
    shutil.copyfile(TEMPLATE, control)
    vae = save_tiny_vae(work / "tiny-vae")
    proc = None
    try:
        with FakeComfyUI(latency=0.2) as fake:
            config = write_config(work, vae, fake.url, display={"fps": args.fps, "history_keep": 0},
                                  generation={"resolution": [args.size, args.size],
                                              "hybrid": {"interpolation_frames": 7, "keyframe_denoise": 0.5}},
                                  logging={"file": "out/reverie.log", "level": "INFO"})
            proc = subprocess.Popen([sys.executable, str(ROOT / "backend" / "main.py"), "--config", str(config)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            child = psutil.Process(proc.pid)
            wait_for(lambda: status(out).get("frame", -1) >= 20, 180, "20 frames", proc)
            live, live_threads = cpu_share(child, args.live_seconds)

            Skin(control).click("pause")
            wait_for(lambda: status(out).get("state") == "paused", 30, "status paused", proc)
            time.sleep(3.0)  # the pause's own work (interrupt, /free, cache release) is over
            jobs_before = fake._number  # prompts the fake has numbered so far (it has no public count)
            paused, paused_threads = cpu_share(child, args.seconds)
            jobs_after, frees = fake._number, len(fake.free_calls)

            Skin(control).click("quit")
            proc.wait(30)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'state':<8} {'seconds':>8} {'CPU % of one core':>18} {'threads':>8}")
    print(f"{'live':<8} {args.live_seconds:>8.0f} {live:>18.2f} {live_threads:>8}")
    print(f"{'paused':<8} {args.seconds:>8.0f} {paused:>18.2f} {paused_threads:>8}")
    print(f"keyframe jobs submitted while paused: {jobs_after - jobs_before}; POST /free calls: {frees}")
    check = rules_cost()
    print(f"pause rules: {check * 1e3:.2f} ms CPU per check here (median of 50, every rule on) = "
          f"{check / 2.0 * 100:.2f} % of one core at one check every 2 s (the paused figure includes the "
          f"daemon's own checks)")
    print(f"target while paused: under 1 % of one core -> {'met' if paused < 1.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
