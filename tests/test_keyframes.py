"""Keyframe sources: the folder cycle, and the ComfyUI feedback loop's retry/backoff/rotation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.comfyui.errors import ComfyUnavailable, ExecutionFailed, Interrupted, WorkflowRejected
from backend.comfyui.workflow import WorkflowError
from backend.folder_source import FolderSource
from backend.frames import Keyframe, KeyframeSourceError
from backend.keyframes import ComfyUISource
from backend.seeds import PromptRotation, SeedPolicy


@dataclass(frozen=True)
class P:
    prompt: str
    negative: str = "ugly"


class ScriptedGenerator:
    """Stands in for backend.comfyui.KeyframeGenerator: plays a script of outcomes per call."""

    def __init__(self, script=(), preflight_error=None) -> None:
        self.script = list(script)
        self.calls: list[dict] = []
        self.preflights = 0
        self.preflight_error = preflight_error

    def preflight(self) -> None:
        self.preflights += 1
        if self.preflight_error is not None:
            raise self.preflight_error

    def generate_keyframe(self, image, prompt, negative, seed, denoise):
        self.calls.append(dict(image=image, prompt=prompt, negative=negative, seed=seed, denoise=denoise))
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        return Keyframe(Image.new("RGB", (16, 16), (len(self.calls), 0, 0)), 0.5, prompt, seed,
                        origin="txt2img" if image is None else "img2img", negative=negative,
                        denoise=None if image is None else denoise)


def source(generator, **kw) -> ComfyUISource:
    kw.setdefault("prompts", [P("a"), P("b")])
    kw.setdefault("prompt_period", 2)
    kw.setdefault("seed", SeedPolicy("increment", 10))
    kw.setdefault("denoise", 0.4)
    kw.setdefault("max_backoff", 0.02)
    return ComfyUISource(generator, **kw)


def image(color=(1, 2, 3), size=(16, 16)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_first_keyframe_is_the_start_image_then_img2img_of_the_previous_one():
    gen = ScriptedGenerator()
    src = source(gen, start_image=image())
    k0 = src.next_keyframe(None)
    assert k0.origin == "start_image" and not k0.generated and gen.calls == []
    k1 = src.next_keyframe(k0.image)
    assert gen.calls[0]["image"] is k0.image and k1.origin == "img2img" and k1.generated
    assert (k1.seconds, k1.prompt, k1.seed) == (0.5, "a", 10)
    assert gen.calls[0]["denoise"] == 0.4


def test_without_a_start_image_the_first_keyframe_is_txt2img():
    gen = ScriptedGenerator()
    k0 = source(gen).next_keyframe(None)
    assert gen.calls[0]["image"] is None and k0.origin == "txt2img"


def test_prompts_rotate_every_period_and_next_prompt_skips_ahead():
    gen = ScriptedGenerator()
    src = source(gen, prompts=[P("a"), P("b"), P("c")], prompt_period=2)
    for _ in range(5):
        src.next_keyframe(image())
    assert [c["prompt"] for c in gen.calls] == ["a", "a", "b", "b", "c"]
    src.next_prompt()
    src.next_keyframe(image())
    assert gen.calls[-1]["prompt"] == "a" and src.prompt == "a"


@pytest.mark.parametrize("policy, expected", [("fixed", [7, 7, 7]), ("increment", [7, 8, 9])])
def test_seed_policies(policy, expected):
    seeds = SeedPolicy(policy, 7)
    assert [seeds.next() for _ in range(3)] == expected


def test_random_seeds_differ():
    seeds = SeedPolicy("random")
    assert len({seeds.next() for _ in range(5)}) == 5


def test_a_failed_keyframe_is_retried_with_a_new_seed():
    gen = ScriptedGenerator([ExecutionFailed("oom")])
    keyframe = source(gen, seed=SeedPolicy("fixed", 5)).next_keyframe(image())
    assert keyframe.generated and len(gen.calls) == 2
    assert gen.calls[0]["seed"] == 5 and gen.calls[1]["seed"] != 5


def test_a_keyframe_failing_every_attempt_is_skipped_not_fatal():
    gen = ScriptedGenerator([ExecutionFailed("bad")] * 3)
    src = source(gen, attempts=3)
    previous = image()
    keyframe = src.next_keyframe(previous)
    assert keyframe.origin == "skipped" and keyframe.image is previous and not keyframe.generated
    assert "bad" in src.last_error


def test_a_job_interrupted_in_comfyuis_ui_is_made_again_with_the_same_seed_not_counted(caplog):
    gen = ScriptedGenerator([Interrupted("ComfyUI interrupted prompt x")] * 3)
    src = source(gen, attempts=2, seed=SeedPolicy("fixed", 7))
    with caplog.at_level("INFO", logger="backend.keyframes"):
        keyframe = src.next_keyframe(image())
    assert keyframe.generated and keyframe.origin == "img2img" and keyframe.seed == 7
    assert [call["seed"] for call in gen.calls] == [7, 7, 7, 7] and src.last_error == ""
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "interrupted in ComfyUI" in caplog.text


def test_an_unexpected_error_is_a_failed_attempt_with_its_traceback_logged_once(caplog):
    gen = ScriptedGenerator([KeyError("images"), IndexError("list index out of range"), "ok"] + [KeyError("x")] * 3)
    src = source(gen, attempts=3)
    with caplog.at_level("WARNING", logger="backend.keyframes"):
        first = src.next_keyframe(image())
        second = src.next_keyframe(first.image)
    assert first.generated and second.origin == "skipped"   # 2 failures then ok; then 3 failures
    assert "unexpected KeyError" in src.last_error
    assert sum(1 for r in caplog.records if r.exc_info) == 1


def test_a_workflow_error_while_patching_is_a_user_error_not_a_crash():
    gen = ScriptedGenerator([WorkflowError("builtin:img2img: has no LoadImage node")])
    with pytest.raises(KeyframeSourceError, match="no LoadImage node.*fix comfyui.workflow"):
        source(gen).next_keyframe(image())


def test_a_server_dying_mid_download_is_retried_until_the_keyframe_arrives(tmp_path):
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import load_workflow
    from tests.fake_comfyui import FakeComfyUI, fake_sample

    with FakeComfyUI(root=tmp_path, websocket_node=False) as fake:    # SaveImage: images come over /view
        client = ComfyClient(fake.url, request_timeout=3.0, poll_interval=0.3)
        gen = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img"),
                                txt2img=load_workflow("builtin:txt2img"), checkpoint=None, steps=2, cfg=7.0,
                                sampler="euler", scheduler="normal", width=32, height=32)
        src = source(gen, seed=SeedPolicy("fixed", 4), client=client)
        fake.truncate_next_view = 2
        try:
            keyframe = src.next_keyframe(image((9, 80, 200), (32, 32)))
        finally:
            src.close()
        assert keyframe.origin == "img2img" and fake.truncate_next_view == 0
        assert np.array_equal(np.asarray(keyframe.image), fake_sample(image((9, 80, 200), (32, 32)), 4, 0.4))
        assert src.state == "connected"


def test_each_keyframe_carries_the_prompt_its_image_was_made_with():
    gen = ScriptedGenerator(["ok", "ok"] + [ExecutionFailed("bad")] * 3)
    src = source(gen, prompt_period=1, attempts=3, start_image=image())
    start = src.next_keyframe(None)
    first = src.next_keyframe(start.image)
    second = src.next_keyframe(first.image)
    assert (start.prompt, first.prompt, second.prompt) == ("", "a", "b")
    assert src.prompt == "a"                  # the source's prompt is the next one to be made
    skipped = src.next_keyframe(second.image)
    assert skipped.origin == "skipped" and skipped.image is second.image and skipped.prompt == "b"


def test_comfyui_down_reports_unavailable_and_carries_on_when_it_is_back():
    gen = ScriptedGenerator([ComfyUnavailable("refused")] * 4)
    src = source(gen, preflight_done=True)
    states = []
    watcher = threading.Thread(target=lambda: [states.append((src.state, src.last_error)) or time.sleep(0.005)
                                               for _ in range(40)])
    watcher.start()
    keyframe = src.next_keyframe(image())
    watcher.join()
    assert keyframe.generated and len(gen.calls) == 5
    assert any(state == "unavailable" and "not reachable" in error for state, error in states)
    assert (src.state, src.last_error) == ("connected", "")


def test_close_ends_the_backoff_wait_promptly():
    gen = ScriptedGenerator([ComfyUnavailable("refused")] * 1000)
    src = source(gen, max_backoff=30.0)
    threading.Timer(0.2, src.close).start()
    started = time.monotonic()
    assert src.next_keyframe(image()) is None
    assert time.monotonic() - started < 2.0


def test_a_workflow_rejected_at_the_first_contact_is_a_user_error():
    gen = ScriptedGenerator(preflight_error=WorkflowRejected("checkpoint not found", ["available: a.safetensors"]))
    with pytest.raises(KeyframeSourceError, match="available: a.safetensors"):
        source(gen).next_keyframe(image())


def test_new_keyframe_starts_over_from_txt2img():
    gen = ScriptedGenerator()
    src = source(gen)
    src.new_keyframe()
    keyframe = src.next_keyframe(image())
    assert gen.calls[0]["image"] is None and keyframe.origin == "txt2img"
    src.next_keyframe(keyframe.image)
    assert gen.calls[1]["image"] is keyframe.image


def test_live_update_changes_prompts_and_denoise():
    gen = ScriptedGenerator()
    src = source(gen)
    src.update(prompts=[P("z")], prompt_period=1, seed=SeedPolicy("fixed", 3), denoise=0.9)
    src.next_keyframe(image())
    assert (gen.calls[0]["prompt"], gen.calls[0]["seed"], gen.calls[0]["denoise"]) == ("z", 3, 0.9)


def test_rotation_wraps_around():
    rotation = PromptRotation([P("a"), P("b")], 1)
    seen = []
    for _ in range(4):
        seen.append(rotation.current.prompt)
        rotation.made_one()
    assert seen == ["a", "b", "a", "b"]


# -- folder source ------------------------------------------------------------------------------

def write_images(folder: Path, names) -> None:
    for i, name in enumerate(names):
        Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(folder / name)


def test_folder_source_cycles_images_in_name_order_fitted_to_the_resolution(tmp_path):
    write_images(tmp_path, ["b.png", "a.jpg", "C.webp"])
    (tmp_path / "notes.txt").write_text("not an image")
    src = FolderSource(tmp_path, (16, 8))
    frames = [src.next_keyframe(None) for _ in range(4)]
    assert [f.origin for f in frames] == ["a.jpg", "b.png", "C.webp", "a.jpg"]
    assert all(f.image.size == (16, 8) and f.image.mode == "RGB" and not f.generated for f in frames)


def test_folder_source_skips_unreadable_files_with_a_warning(tmp_path, caplog):
    write_images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    src = FolderSource(tmp_path, (8, 8))
    assert [src.next_keyframe(None).origin for _ in range(3)] == ["a.png", "c.png", "a.png"]
    assert "b.png" in caplog.text


def test_folder_source_picks_up_images_added_while_running(tmp_path):
    write_images(tmp_path, ["a.png"])
    src = FolderSource(tmp_path, (8, 8))
    src.next_keyframe(None)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    assert [src.next_keyframe(None).origin for _ in range(2)] == ["a.png", "b.png"]


def test_an_empty_folder_is_a_clear_error_at_start(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(KeyframeSourceError, match="No images found in"):
        FolderSource(tmp_path, (8, 8))


def test_a_folder_of_only_unreadable_images_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(KeyframeSourceError, match="could be read"):
        FolderSource(tmp_path, (8, 8)).next_keyframe(None)


def test_folder_new_keyframe_skips_an_image(tmp_path):
    write_images(tmp_path, ["a.png", "b.png", "c.png"])
    src = FolderSource(tmp_path, (8, 8))
    src.next_keyframe(None)
    src.new_keyframe()
    assert src.next_keyframe(None).origin == "c.png"
    assert np.asarray(src.next_keyframe(None).image).shape == (8, 8, 3)


def test_a_folder_deleted_mid_run_holds_the_last_image_and_recovers_when_images_return(tmp_path, caplog):
    import shutil
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_images(folder, ["a.png", "b.png"])
    src = FolderSource(folder, (8, 8), max_backoff=0.05)
    shown = src.next_keyframe(None)
    shutil.rmtree(folder)                                # unmounted / deleted while running
    held = [src.next_keyframe(shown.image) for _ in range(3)]
    assert all(k.origin == "held" and k.image is shown.image and not k.generated for k in held)
    assert "cannot read the image folder" in src.last_error
    assert sum("holding the last image" in r.getMessage() for r in caplog.records) == 1
    folder.mkdir()
    write_images(folder, ["c.png"])
    assert src.next_keyframe(held[-1].image).origin == "c.png" and src.last_error == ""


def test_images_briefly_unreadable_mid_run_are_waited_out(tmp_path):
    write_images(tmp_path, ["a.png"])
    src = FolderSource(tmp_path, (8, 8), max_backoff=0.05)
    first = src.next_keyframe(None)
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(b"half written")
    assert src.next_keyframe(first.image).origin == "held" and "a.png" in src.last_error
    (tmp_path / "a.png").write_bytes(good)
    assert src.next_keyframe(first.image).origin == "a.png" and src.last_error == ""


def test_folder_last_error_clears_on_the_next_clean_read(tmp_path):
    write_images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    src = FolderSource(tmp_path, (8, 8))
    assert src.next_keyframe(None).origin == "a.png" and src.last_error == ""
    assert src.next_keyframe(None).origin == "c.png" and "b.png" in src.last_error   # skipped on the way
    assert src.next_keyframe(None).origin == "a.png" and src.last_error == ""


def test_folder_close_ends_an_outage_wait_promptly(tmp_path):
    import shutil
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_images(folder, ["a.png"])
    src = FolderSource(folder, (8, 8), max_backoff=30.0)
    src.next_keyframe(None)
    shutil.rmtree(folder)
    threading.Timer(0.1, src.close).start()          # the outage's first wait is 0.5 s
    started = time.monotonic()
    assert src.next_keyframe(None) is None and time.monotonic() - started < 0.4


# -- outages, lost jobs, our own interrupt (against the fake server) ----------------------------

@pytest.fixture
def comfy(tmp_path):
    """(fake server, ComfyClient, KeyframeGenerator) for 32x32 keyframes; the client is closed after."""
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import load_workflow
    from tests.fake_comfyui import FakeComfyUI

    with FakeComfyUI(root=tmp_path / "comfy", restart_delay=1.0) as fake:
        client = ComfyClient(fake.url, request_timeout=3.0, job_timeout=60.0, poll_interval=0.3)
        gen = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img"),
                                txt2img=load_workflow("builtin:txt2img"), checkpoint=None, steps=2, cfg=7.0,
                                sampler="euler", scheduler="normal", width=32, height=32)
        yield fake, client, gen
        client.close()


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Background:
    """next_keyframe(previous) on a thread of its own; .result / .error once it returns."""

    def __init__(self, src, previous) -> None:
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(src, previous), daemon=True)
        self.thread.start()

    def _run(self, src, previous) -> None:
        try:
            self.result = src.next_keyframe(previous)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            self.error = exc

    def join(self, timeout: float = 30.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "next_keyframe did not return"
        if self.error is not None:
            raise self.error
        return self.result


def test_the_state_is_unavailable_while_a_job_waits_on_a_server_that_went_away(comfy):
    fake, client, gen = comfy
    src = source(gen, client=client, preflight_done=True)
    fake.latency = 30.0                                     # the job outlasts the whole test
    job = Background(src, image((9, 80, 200), (32, 32)))
    wait_for(lambda: fake.running is not None, "the job to start")
    assert src.state == "connected"
    fake.refuse_connections = True                          # the server stops answering mid-job
    wait_for(lambda: src.state == "unavailable", "the state to say unavailable")
    assert job.thread.is_alive(), "the outage showed only because the job gave up"
    assert "not reachable" in src.last_error
    fake.refuse_connections = False                         # back, and the job is still running there
    wait_for(lambda: src.state == "connected", "the state to say connected again")
    assert src.last_error == ""
    fake.latency = 0.0
    src.close()
    job.join()


def test_the_state_follows_the_server_between_jobs_and_the_error_clears_when_it_answers(comfy, caplog):
    fake, client, gen = comfy
    src = source(gen, client=client, preflight_done=True)
    try:
        src.next_keyframe(image((9, 80, 200), (32, 32)))    # then no job runs: the worker's slot is full
        fake.refuse_connections = True
        wait_for(lambda: src.state == "unavailable", "the idle probe to find the outage")
        assert "not reachable" in src.last_error
        fake.refuse_connections = False
        wait_for(lambda: src.state == "connected", "the idle probe to find the server back")
        assert src.last_error == ""
    finally:
        src.close()


def test_a_job_lost_to_a_server_restart_is_made_again_with_the_same_seed_and_no_warning(comfy, caplog):
    from tests.fake_comfyui import fake_sample

    fake, client, gen = comfy
    src = source(gen, client=client, preflight_done=True, seed=SeedPolicy("increment", 40))
    previous = image((9, 80, 200), (32, 32))
    fake.latency, fake.kill_mid_run = 0.3, True             # the job dies with the server, which restarts
    with caplog.at_level("INFO", logger="backend.keyframes"):
        keyframe = src.next_keyframe(previous)
    src.close()
    assert not fake.kill_mid_run, "the kill never happened"
    assert keyframe.origin == "img2img" and keyframe.seed == 40 and src.last_error == ""
    assert np.array_equal(np.asarray(keyframe.image), fake_sample(previous, 40, 0.4))
    assert "same seed" in caplog.text
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "failed" in r.getMessage()]


def test_three_lost_jobs_in_a_row_are_not_a_skipped_keyframe():
    from backend.comfyui.errors import ImagesNotReceived, JobLost

    gen = ScriptedGenerator([JobLost("restarted"), ImagesNotReceived("dropped", socket_dropped=True),
                             JobLost("restarted")])
    src = source(gen, attempts=3, seed=SeedPolicy("increment", 7))
    keyframe = src.next_keyframe(image())
    assert keyframe.generated and keyframe.origin == "img2img"
    assert [call["seed"] for call in gen.calls] == [7, 7, 7, 7] and src.last_error == ""


def test_a_server_that_loses_every_job_still_ends_in_a_skip_not_a_loop():
    from backend.comfyui.errors import JobLost
    from backend.keyframes import LOST_JOBS_FORGIVEN

    gen = ScriptedGenerator([JobLost("forgot it")] * (LOST_JOBS_FORGIVEN + 3))
    src = source(gen, attempts=3)
    keyframe = src.next_keyframe(image())
    assert keyframe.origin == "skipped" and "lost the job" in src.last_error
    assert len(gen.calls) == LOST_JOBS_FORGIVEN + 3


class Counting:
    """A KeyframeGenerator wrapper that counts the jobs sent."""

    def __init__(self, inner) -> None:
        self.inner, self.sent = inner, 0

    def preflight(self) -> None:
        self.inner.preflight()

    def generate_keyframe(self, *args):
        self.sent += 1
        return self.inner.generate_keyframe(*args)


def test_interrupt_current_stops_our_job_holds_and_makes_it_again_with_the_same_seed_on_resume(comfy, caplog):
    from tests.fake_comfyui import fake_sample

    fake, client, gen = comfy
    counting = Counting(gen)
    src = source(counting, client=client, preflight_done=True, seed=SeedPolicy("increment", 21))
    previous = image((9, 80, 200), (32, 32))
    fake.latency = 30.0
    with caplog.at_level("INFO", logger="backend.keyframes"):
        job = Background(src, previous)
        wait_for(lambda: fake.running is not None, "the job to start")
        assert src.interrupt_current() is True
        wait_for(lambda: "interrupted for a pause" in caplog.text, "the job to end interrupted")
    time.sleep(0.3)                     # room for a wrong immediate resubmission to happen
    assert counting.sent == 1 and job.thread.is_alive() and fake.running is None and not fake.pending
    fake.latency = 0.0
    src.resume()
    keyframe = job.join()
    src.close()
    assert counting.sent == 2 and keyframe.seed == 21
    assert np.array_equal(np.asarray(keyframe.image), fake_sample(previous, 21, 0.4))


def test_interrupt_current_with_no_job_of_ours_leaves_another_clients_job_alone(comfy):
    from backend.comfyui.client import ComfyClient
    from tests.comfyui.conftest import invert_graph

    fake, client, gen = comfy
    src = source(gen, client=client, preflight_done=True)
    other = ComfyClient(fake.url, poll_interval=0.3)
    ref = other.upload_image(image((1, 2, 3), (8, 8)), "other.png")
    fake.latency = 1.0
    results = []
    worker = threading.Thread(target=lambda: results.append(other.run(invert_graph(ref))))
    worker.start()
    wait_for(lambda: fake.running is not None, "the other client's job to start")
    assert src.interrupt_current() is False
    worker.join(timeout=10)
    other.close()
    src.close()
    assert len(results) == 1 and len(results[0]) == 1


def test_server_text_in_an_error_reaches_last_error_and_the_log_safe_to_encode(caplog):
    gen = ScriptedGenerator([ExecutionFailed("KSampler\udcff failed\nFORGED LOG LINE \x1b[31m")] * 3)
    src = source(gen, attempts=3)
    with caplog.at_level("WARNING", logger="backend.keyframes"):
        src.next_keyframe(image())
    src.last_error.encode("utf-8")
    assert "\n" not in src.last_error and "\x1b" not in src.last_error and "\\udcff" in src.last_error
    for record in caplog.records:
        record.getMessage().encode("utf-8")
        assert "\n" not in record.getMessage()


def test_a_prompt_with_a_lone_surrogate_is_sent_and_shown_encodable():
    gen = ScriptedGenerator()
    src = source(gen, prompts=[P("sea \udc80 at night", "bad\udcff")])
    keyframe = src.next_keyframe(image())
    for text in (src.prompt, keyframe.prompt, gen.calls[0]["prompt"], gen.calls[0]["negative"]):
        text.encode("utf-8")


# -- the Dream hooks (INTERFACES.md I4) ---------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    image: Image.Image
    denoise: float | None = None
    fresh_seed: bool = False
    reason: str = ""


class FakeDream:
    """Records every hook call; plan_input and check_blank answer from small scripts."""

    def __init__(self, plans=(), blanks=()) -> None:
        self.plans, self.blanks = list(plans), list(blanks)
        self.calls: list[tuple] = []

    def plan_input(self, previous):
        self.calls.append(("plan_input", previous))
        return self.plans.pop(0) if self.plans else Plan(previous.image)

    def check_blank(self, picture):
        self.calls.append(("check_blank", picture))
        return self.blanks.pop(0) if self.blanks else ""

    def keyframe_made(self, keyframe):
        self.calls.append(("keyframe_made", keyframe))

    def prompt_changed(self):
        self.calls.append(("prompt_changed",))


def test_plan_input_gets_the_previous_keyframe_and_its_image_and_denoise_are_what_is_sent():
    gen, anchor = ScriptedGenerator(), image((200, 0, 0))
    dream = FakeDream(plans=[Plan(anchor, denoise=0.7, reason="anchor")])
    src = source(gen, dream=dream, start_image=image())
    start = src.next_keyframe(None)
    made = src.next_keyframe(start.image)        # the worker may pass the bare image: mapped back
    assert dream.calls[0] == ("plan_input", start)
    assert gen.calls[0]["image"] is anchor and gen.calls[0]["denoise"] == 0.7 and gen.calls[0]["seed"] == 10
    assert [c[0] for c in dream.calls] == ["plan_input", "check_blank", "keyframe_made"]
    assert dream.calls[1][1] is made.image and dream.calls[2][1] is made


def test_a_collapse_plan_asks_for_a_fresh_seed_and_none_denoise_keeps_the_configured_one():
    gen = ScriptedGenerator()
    src = source(gen, dream=FakeDream(plans=[Plan(image(), fresh_seed=True, reason="collapse")]),
                 seed=SeedPolicy("fixed", 5))
    src.next_keyframe(image())
    assert gen.calls[0]["seed"] != 5 and gen.calls[0]["denoise"] == 0.4


def test_a_blank_keyframe_is_retried_with_seed_plus_one_then_skipped_never_returned_nor_counted():
    gen = ScriptedGenerator()
    dream = FakeDream(blanks=["black", "black", ""])
    src = source(gen, dream=dream, seed=SeedPolicy("fixed", 50), attempts=3)
    keyframe = src.next_keyframe(image())
    assert [c["seed"] for c in gen.calls] == [50, 51, 52] and keyframe.seed == 52 and src.last_error == ""
    assert [c[0] for c in dream.calls].count("keyframe_made") == 1
    previous = keyframe
    dream.blanks = ["flat"] * 3
    skipped = src.next_keyframe(previous)
    assert skipped.origin == "skipped" and skipped.image is previous.image
    assert [c[0] for c in dream.calls].count("keyframe_made") == 1        # a skip is not a keyframe made


def test_prompt_changed_is_called_when_the_rotation_moves_on_and_on_next_prompt_and_new_keyframe():
    gen, dream = ScriptedGenerator(), FakeDream()
    src = source(gen, dream=dream, prompt_period=2)
    previous = image()
    for _ in range(3):
        previous = src.next_keyframe(previous)
    assert [c[0] for c in dream.calls].count("prompt_changed") == 1         # after the second keyframe
    src.next_prompt()
    src.new_keyframe()
    assert [c[0] for c in dream.calls].count("prompt_changed") == 3
    src.next_keyframe(previous)                                            # txt2img: no input to plan
    assert dream.calls[-2][0] == "check_blank" and gen.calls[-1]["image"] is None


def test_a_dream_hook_that_raises_is_logged_and_the_keyframe_is_made_anyway(caplog):
    class Broken(FakeDream):
        def plan_input(self, previous):
            raise ValueError("bug in the dream")

        def check_blank(self, picture):
            raise KeyError("metrics")

    gen = ScriptedGenerator()
    previous = image()
    with caplog.at_level("WARNING", logger="backend.keyframes"):
        keyframe = source(gen, dream=Broken()).next_keyframe(previous)
    assert keyframe.generated and gen.calls[0]["image"] is previous and gen.calls[0]["denoise"] == 0.4
    assert "dream.plan_input failed" in caplog.text and "dream.check_blank failed" in caplog.text
