"""Two `backend/main.py` daemons, two output folders, one fake ComfyUI: no cross-talk (issue 14).

Each daemon makes 200 keyframes (N = 0 and a pixel crossfade, so every frame is a keyframe and no
VAE is needed: the test costs ComfyUI jobs, not decodes) while the other runs, beside a third
client whose finished jobs stay in ComfyUI's history. Every keyframe of each daemon must be the
fake's exact img2img of that daemon's previous keyframe with its own seeds, so an input the other
daemon overwrote would show.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from tests.e2e.conftest import start_daemon, write_config

KEYFRAMES = 200
SEEDS = (100, 5000)     # different chains, so the two daemons' keyframes never coincide
# Measure only, and no blank check: every input is exactly the previous keyframe and every seed
# is used (the fake's exact sampler fades a 64x64 chain to near-flat within ~20 keyframes, which
# the dream's blank check would reject and retry with the next seed).
EXACT_CHAIN = {"control": False, "blank_l_mean": 0.0, "blank_l_std": 0.0}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_two_daemons_sharing_one_comfyui_make_200_keyframes_each_from_their_own_inputs(tmp_path, tiny_vae):
    from tests.comfyui.conftest import invert_graph, record_jobs
    from tests.fake_comfyui import FakeComfyUI, fake_sample, fake_txt2img

    with FakeComfyUI(latency=0.02, history_delay=0.01) as fake:
        jobs = record_jobs(fake)
        session = requests.Session()
        session.trust_env = False
        ref = "someone_else.png"
        upload = session.post(fake.url + "/upload/image", files={"image": (ref, _png(), "image/png")},
                              data={"overwrite": "true"})
        assert upload.status_code == 200
        theirs = [session.post(fake.url + "/prompt", json={"prompt": invert_graph(ref), "client_id": "someone"})
                  .json()["prompt_id"] for _ in range(3)]
        folders = [tmp_path / "a", tmp_path / "b"]
        daemons = []
        try:
            for folder, seed in zip(folders, SEEDS):
                folder.mkdir()
                write_config(folder, tiny_vae, fake.url, generation={
                    "resolution": [64, 64],
                    "hybrid": {"interpolation_frames": 0, "keyframe_denoise": 0.5, "use_vae_interpolation": False}},
                    keyframes={"seed": {"policy": "increment", "value": seed}},
                    display={"fps": 60, "output_dir": "out", "history_keep": 1000},
                    dream=EXACT_CHAIN)
                daemons.append(start_daemon(folder, "--max-frames", str(KEYFRAMES)))
            outputs = [d.communicate(timeout=600)[0] for d in daemons]
        finally:
            for daemon in daemons:
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGINT)
                    daemon.wait(30)
            session.close()
        history_left = sorted(fake.history)
        uploads = sorted(p.name for p in (fake.root / "input").rglob("*.png"))
    for daemon, output in zip(daemons, outputs):
        assert daemon.returncode == 0, output
        assert "Traceback" not in output

    for folder, seed in zip(folders, SEEDS):
        files = sorted((folder / "out" / "keyframes").glob("keyframe_*.png"))
        assert len(files) >= KEYFRAMES, (folder, len(files))
        keys = [pixels(f) for f in files]
        assert np.array_equal(keys[0], fake_txt2img(seed, 64, 64))
        for s in range(1, len(keys)):
            assert np.array_equal(keys[s], fake_sample(Image.fromarray(keys[s - 1]), seed + s, 0.5)), \
                f"{folder.name}: keyframe {s} is not img2img of its own keyframe {s - 1}"

    # They really ran at the same time: their jobs interleave on the server.
    owners = [job.client_id for job in jobs if job.client_id != "someone"]
    assert sum(a != b for a, b in zip(owners, owners[1:])) > 20
    # Upload names: three slots per daemon, under two different tags, and the other client's file.
    tags = {}
    for name in uploads:
        match = re.fullmatch(r"keyframe_([0-9a-f]{8})_([0-2])\.png", name)
        if match:
            tags.setdefault(match.group(1), set()).add(match.group(2))
    assert len(tags) == 2 and all(slots == {"0", "1", "2"} for slots in tags.values()), uploads
    assert set(uploads) - {f"keyframe_{t}_{s}.png" for t in tags for s in "012"} == {ref}
    # Each daemon deleted only its own history entries.
    assert history_left == sorted(theirs)


def _png() -> bytes:
    import io
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()
