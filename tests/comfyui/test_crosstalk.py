"""Two Reverie instances sharing one ComfyUI (issue 14 item 4): no cross-talk.

Each instance is a ComfyUISource with its own ComfyClient and upload tag (the daemon's comes
from backend.desktop.instance_lock.instance_tag of its output folder); both run at once on one
fake server beside a third client that queues jobs of its own straight over HTTP.
"""

from __future__ import annotations

import threading

import numpy as np
import requests

from backend.comfyui.client import ComfyClient
from tests.comfyui.conftest import comfy_source, invert_graph, keyframe_generator, record_jobs
from tests.fake_comfyui import fake_sample

KEYFRAMES = 200


def run_chain(src, start, count: int, made: list, problems: list) -> None:
    """`count` keyframes, each checked against the fake's exact sampler of the one before: a
    keyframe made from the other instance's upload would not match."""
    previous, image = start, start
    try:
        for _ in range(count):
            keyframe = src.next_keyframe(previous)
            if not np.array_equal(np.asarray(keyframe.image), fake_sample(image, keyframe.seed, 0.5)):
                problems.append(f"keyframe seed {keyframe.seed} was not made from its own input")
            made.append(keyframe)
            previous, image = keyframe, keyframe.image
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        problems.append(repr(exc))


def picture(colour: int):
    from PIL import Image
    image = Image.new("RGB", (32, 32))
    image.putdata([((x * 8 + colour) % 256, (y * 8) % 256, colour) for y in range(32) for x in range(32)])
    return image


def test_two_instances_on_one_comfyui_make_200_keyframes_each_from_their_own_inputs(fake):
    tags = ("0a1b2c3d", "4e5f6a7b")
    jobs = record_jobs(fake)
    bystander = requests.Session()
    bystander.trust_env = False
    theirs = ComfyClient(fake.url)
    ref = theirs.upload_image(picture(7), "someone_else.png")
    their_ids = []
    for _ in range(3):                  # finished jobs of another client, left in history on purpose
        answer = bystander.post(fake.url + "/prompt", json={"prompt": invert_graph(ref), "client_id": "someone"})
        their_ids.append(answer.json()["prompt_id"])
    theirs.close()

    clients = [ComfyClient(fake.url, request_timeout=5.0, job_timeout=60.0, poll_interval=0.3) for _ in tags]
    sources = [comfy_source(c, seed=seed, generator=keyframe_generator(c, upload_tag=tag))
               for c, tag, seed in zip(clients, tags, (1000, 5000))]
    made: list[list] = [[], []]
    problems: list[str] = []
    threads = [threading.Thread(target=run_chain, args=(src, picture(60 * i), KEYFRAMES, made[i], problems))
               for i, src in enumerate(sources)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not any(t.is_alive() for t in threads), "an instance got stuck"
    finally:
        for src in sources:
            src.close()
    assert problems == []
    assert [k.seed for k in made[0]] == list(range(1000, 1000 + KEYFRAMES))
    assert [k.seed for k in made[1]] == list(range(5000, 5000 + KEYFRAMES))
    # Both really ran at the same time: their jobs interleave on the server.
    owners = [job.client_id for job in jobs if job.client_id != "someone"]
    switches = sum(a != b for a, b in zip(owners, owners[1:]))
    assert switches > 20, f"the two instances barely overlapped ({switches} switches)"
    # No name in common: neither can overwrite the other's input between its upload and its job.
    uploads = sorted(p.name for p in (fake.root / "input" / "reverie").iterdir())
    assert uploads == sorted(["someone_else.png"] + [f"keyframe_{t}_{slot}.png" for t in tags for slot in range(3)])
    # Each deleted only its own history entries: the other client's are all still there.
    assert sorted(fake.history) == sorted(their_ids)
    bystander.close()
