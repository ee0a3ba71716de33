"""One call for the keyframe source: generate_keyframe(image, prompt, negative, seed, denoise) -> Keyframe.

upload (a small rotating set of names, overwritten, so ComfyUI's input folder stays bounded;
tagged per Reverie instance when `upload_tag` is set) -> patch a copy of the workflow -> run ->
the first output image as a backend.frames.Keyframe. preflight() checks the server before its
first job (again whenever a FailoverClient moves to another server): checkpoint name, sampler and scheduler names (with the
server's choices in the message), node classes present, and whether SaveImageWebsocket exists
(preferred: it writes nothing to disk; otherwise outputs fall back to SaveImage under
ComfyUI's output/reverie/ folder, which then grows by one PNG per keyframe). The same fallback
is taken when a job succeeds but its SaveImageWebsocket frames never arrive (a socket that stays
silent, e.g. behind a proxy that drops WebSocket traffic): polling still sees every job finish,
and only an image ComfyUI keeps on disk can then be fetched. Every `websocket_retry_every`
keyframes SaveImageWebsocket is tried again, and kept when its images arrive, so a socket that
was only stalled for a while does not make the output folder grow for the rest of the run.
"""

from __future__ import annotations

import itertools
import logging
import re
import time

from PIL import Image

from backend.comfyui import ipadapter
from backend.comfyui.client import ComfyClient, ExecutionFailed, ImagesNotReceived, WorkflowRejected
from backend.comfyui.errors import ComfyError, ComfyUnavailable
from backend.comfyui.workflow import Workflow
from backend.frames import Keyframe

log = logging.getLogger(__name__)

UPLOAD_SLOTS = 3          # names reused round-robin: keyframe_0.png .. keyframe_2.png (keyframe_{tag}_0.png ..)
WEBSOCKET_RETRY_EVERY = 20  # keyframes made through SaveImage before SaveImageWebsocket is tried again
DROPS_BEFORE_SWITCH = 2     # jobs in a row whose images a dropped socket lost, before SaveImage


class KeyframeGenerator:
    """Makes keyframes through a ComfyClient from an img2img and a txt2img workflow."""

    def __init__(self, client: ComfyClient, *, img2img: Workflow, txt2img: Workflow, checkpoint: str | None,
                 steps: int, cfg: float, sampler: str, scheduler: str, width: int, height: int,
                 websocket_retry_every: int = WEBSOCKET_RETRY_EVERY, upload_tag: str = ""):
        if not re.fullmatch(r"[A-Za-z0-9_-]*", upload_tag):
            raise ValueError(f"upload_tag must be ASCII letters, digits, '-' or '_', got {upload_tag!r}")
        self.client = client
        # Two daemons sharing one ComfyUI must not overwrite each other's input image between
        # upload and run: a tag per instance (backend.desktop.instance_lock.instance_tag) keeps
        # their names apart.
        self.upload_prefix = f"keyframe_{upload_tag}_" if upload_tag else "keyframe_"
        self.img2img, self.txt2img = img2img, txt2img
        self.checkpoint = checkpoint          # None: keep the workflow's own ckpt_name
        self.steps, self.cfg = steps, cfg
        self.sampler, self.scheduler = sampler, scheduler
        self.width, self.height = width, height
        self._slots = itertools.cycle(range(UPLOAD_SLOTS))
        self._checked_on: str | None = None   # the server URL the last preflight passed on
        self.websocket_output = True          # False while SaveImageWebsocket images go missing
        self.websocket_retry_every = websocket_retry_every
        self._websocket_workflows: tuple[Workflow, Workflow] | None = None   # (img2img, txt2img), server has it
        self._saved_since_switch = 0          # keyframes made through SaveImage since the last switch or try
        self._drops_in_a_row = 0              # jobs whose WebSocket images were lost to a dropped socket
        self._reference: tuple | None = None  # (image, server, uploaded name) of the last IP-Adapter reference

    def preflight(self) -> None:
        """Check the live server; raise WorkflowRejected naming every problem and the choices.

        Also picks the output node: SaveImageWebsocket when the server has it, else SaveImage.
        Raises ComfyUnavailable when the server does not answer. A check the server cannot answer
        (an unexpected status or body: an older or different server) is skipped with a warning.
        With a FailoverClient a server that cannot run the workflows is passed over for the next
        one; WorkflowRejected only when none can. Runs again by itself whenever the client's
        current server changes.
        """
        while True:
            server = self.server
            try:
                self._check_server()
                return
            except ComfyUnavailable:
                if self.server == server:   # a FailoverClient that moved on: check the new server now
                    raise
            except WorkflowRejected as exc:
                pass_over = getattr(self.client, "pass_over", None)
                if pass_over is None or not pass_over("; ".join([exc.summary, *exc.lines])):
                    raise

    @property
    def server(self) -> str:
        """The URL jobs go to now (a FailoverClient's current server)."""
        return getattr(self.client, "current_url", self.client.url)

    def _check_server(self) -> None:
        server = self.server      # read first: a switch during the checks makes the next keyframe check again
        problems: list[str] = []
        info = self._ask("the node classes, sampler and scheduler names", self.client.object_info)
        known, info = info is not None, info or {}
        for wf in (self.img2img, self.txt2img) if known else ():
            missing = sorted(wf.class_types() - set(info) - {"SaveImageWebsocket"})
            no_ipadapter = ipadapter.missing_nodes(wf.class_types(), info)
            if no_ipadapter:
                problems.append(f"{wf.source}: {no_ipadapter}")
                missing = [cls for cls in missing if not ipadapter.uses_ipadapter({cls})]
            elif ipadapter.uses_ipadapter(wf.class_types()):
                problems.extend(f"{wf.source}: {p}" for p in ipadapter.missing_models(self.client, wf.graph, info))
            if missing:
                problems.append(f"{wf.source}: ComfyUI has no node class {', '.join(missing)} "
                                f"(install the custom nodes or change the workflow)")
        names = {wf.checkpoint() for wf in (self.img2img, self.txt2img) if "checkpoint" in wf.roles}
        wanted = {self.checkpoint} if self.checkpoint is not None and names else names - {None}
        available = self._ask("the checkpoint name", self.client.checkpoints) if wanted else None
        if available is not None:
            for name in sorted(wanted - set(available)):
                problems.append(f"checkpoint {name!r} is not in ComfyUI's models/checkpoints; available: "
                                f"{', '.join(available) if available else 'none (put a .safetensors file there)'}")
        ksampler = info.get("KSampler", {}).get("input", {}).get("required", {})
        uses_sampler = any("sampler" in wf.roles for wf in (self.img2img, self.txt2img))
        for key, value in (("sampler_name", self.sampler), ("scheduler", self.scheduler)) if uses_sampler else ():
            choices = ksampler.get(key, [None])[0]
            if isinstance(choices, list) and value not in choices:
                problems.append(f"{key} {value!r} is not offered by this ComfyUI; available: {', '.join(choices)}")
        if problems:
            raise WorkflowRejected("ComfyUI cannot run Reverie's workflows as configured", problems)
        # SaveImage when the node list is unknown: it works on every server
        server_has_ws = "SaveImageWebsocket" in info
        has_ws = server_has_ws and self.websocket_output
        self.img2img, self.txt2img = (self._choose_output(wf, has_ws) for wf in (self.img2img, self.txt2img))
        if has_ws:
            self._websocket_workflows = (self.img2img, self.txt2img)
        elif not server_has_ws:
            self._websocket_workflows = None      # this server could not run them: never try them here
        self._checked_on = server

    @staticmethod
    def _ask(what: str, question):
        """question() or, when the server answers something unexpected, None after a warning."""
        try:
            return question()
        except ComfyUnavailable:
            raise
        except ComfyError as exc:
            log.warning("could not check %s with this ComfyUI (%s); skipping that check", what, exc)
            return None

    @staticmethod
    def _choose_output(wf: Workflow, has_websocket_node: bool) -> Workflow:
        return wf.with_websocket_output() if has_websocket_node else wf.with_save_output()

    def generate_keyframe(self, image: Image.Image | None, prompt: str, negative: str, seed: int,
                          denoise: float, reference: Image.Image | None = None,
                          reference_weight: float = 0.0) -> Keyframe:
        """img2img from `image` (txt2img at width x height when None); seed 0..2**64-1, denoise 0..1.

        An IP-Adapter img2img workflow is also conditioned on `reference` at `reference_weight`
        (without one: on the input itself at weight 0, so the graph stays valid); other
        workflows ignore both.

        The Keyframe's image is RGB as ComfyUI made it (size set by the workflow); `seconds` is
        upload + queue + wait + fetch, wall clock."""
        if self._checked_on != self.server:
            self.preflight()
        start = time.monotonic()
        common = dict(positive=prompt, negative=negative, seed=seed, steps=self.steps, cfg=self.cfg,
                      sampler=self.sampler, scheduler=self.scheduler, checkpoint=self.checkpoint)
        if image is None:
            patch = dict(width=self.width, height=self.height, denoise=1.0, **common)
        else:
            ref = self.client.upload_image(image.convert("RGB"), f"{self.upload_prefix}{next(self._slots)}.png")
            patch = dict(image=ref, denoise=denoise, **common)
            if "ipadapter" in self.img2img.roles:
                patch.update(self._reference_patch(reference, reference_weight, ref))
        trying_websocket = (not self.websocket_output and self._websocket_workflows is not None
                            and self._saved_since_switch >= self.websocket_retry_every)
        workflows = self._websocket_workflows if trying_websocket else (self.img2img, self.txt2img)
        workflow = workflows[1] if image is None else workflows[0]
        try:
            result = self.client.run_job(workflow.patch(**patch), output_node=workflow.output_node)
        except ImagesNotReceived as exc:
            self._drops_in_a_row = self._drops_in_a_row + 1 if exc.socket_dropped else 0
            if self.websocket_output and 0 < self._drops_in_a_row < DROPS_BEFORE_SWITCH:
                # Lost in transit (ComfyUI restarted its socket, a network blip): not a reason to
                # fill ComfyUI's output folder; the caller makes the keyframe again. A socket that
                # drops during every job (a proxy's idle timeout) does switch, below.
                raise
            if self.websocket_output:
                self._stop_using_the_websocket_output(exc)
            elif trying_websocket:
                log.debug("SaveImageWebsocket images still go missing (%s); staying with SaveImage", exc)
                self._saved_since_switch = 0
            else:
                raise
            workflow = self.txt2img if image is None else self.img2img
            result = self.client.run_job(workflow.patch(**patch), output_node=workflow.output_node)
        else:
            self._drops_in_a_row = 0
            if trying_websocket:
                self._use_the_websocket_output_again()
        if not self.websocket_output:
            self._saved_since_switch += 1
        if not result.images:
            raise ExecutionFailed(f"prompt {result.prompt_id} produced no images at node {workflow.output_node}")
        return Keyframe(result.images[0], seconds=time.monotonic() - start, prompt=prompt, seed=seed,
                        origin="txt2img" if image is None else "img2img", negative=negative,
                        denoise=None if image is None else denoise, prompt_id=result.prompt_id)

    def _reference_patch(self, reference: Image.Image | None, weight: float, input_ref: str) -> dict:
        """The reference image name and weight for an IP-Adapter graph; the reference is uploaded
        only when it is another image than last time (or the server changed)."""
        if reference is None:
            return dict(reference=input_ref, reference_weight=0.0)
        cached = self._reference
        if cached is None or cached[0] is not reference or cached[1] != self.server:
            name = self.client.upload_image(reference.convert("RGB"), f"{self.upload_prefix}reference.png")
            self._reference = cached = (reference, self.server, name)
        return dict(reference=cached[2], reference_weight=weight)

    def _stop_using_the_websocket_output(self, exc: ImagesNotReceived) -> None:
        """Switch both workflows to SaveImage (logged once per switch)."""
        log.warning("%s; switching the keyframe output from SaveImageWebsocket to SaveImage: images are "
                    "fetched over HTTP, and ComfyUI's output/reverie/ folder grows by one PNG per keyframe "
                    "until SaveImageWebsocket works again (tried every %d keyframes)", exc,
                    self.websocket_retry_every)
        self.websocket_output = False
        self._saved_since_switch = 0
        self.img2img, self.txt2img = (wf.with_save_output() for wf in (self.img2img, self.txt2img))

    def _use_the_websocket_output_again(self) -> None:
        log.info("SaveImageWebsocket images arrive again; keyframes no longer go to ComfyUI's output folder")
        self.websocket_output = True
        self.img2img, self.txt2img = self._websocket_workflows
