"""HTTP and WebSocket routes of the fake server, each also served under /api like the real one.

Bodies and status codes follow the recorded traffic: 400 JSON for validation failures, 500
text/plain for bodies the real server chokes on (invalid JSON, UI-format workflows), 403 with an
empty body when an Origin header does not match Host, 404/400 empty for /view misses/traversal.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import WSMsgType, web

from tests.fake_comfyui.executor import Job
from tests.fake_comfyui.validate import MalformedPrompt, validate

_CRASH = "500 Internal Server Error\n\nServer got itself in trouble"


@web.middleware
async def _origin_check(request: web.Request, handler):
    origin = request.headers.get("Origin")
    if origin is not None and urlparse(origin).netloc != request.headers.get("Host", ""):
        return web.Response(status=403)
    return await handler(request)


def build_app(fake) -> web.Application:
    """A fresh app per listen (an aiohttp app cannot be reused after its runner is cleaned up)."""
    h = _Handlers(fake)
    app = web.Application(middlewares=[_origin_check], client_max_size=1 << 28)
    table = [
        ("GET", "/ws", h.ws), ("GET", "/system_stats", h.system_stats), ("GET", "/features", h.features),
        ("GET", "/prompt", h.get_prompt), ("POST", "/prompt", h.post_prompt), ("GET", "/queue", h.get_queue),
        ("POST", "/queue", h.post_queue), ("POST", "/interrupt", h.interrupt), ("POST", "/free", h.free),
        ("GET", "/history", h.get_history), ("GET", "/history/{prompt_id}", h.get_history_one),
        ("POST", "/history", h.post_history), ("GET", "/view", h.view), ("POST", "/upload/image", h.upload),
        ("GET", "/object_info", h.object_info), ("GET", "/object_info/{node_class}", h.object_info_one),
        ("GET", "/models", h.models), ("GET", "/models/{folder}", h.models_folder),
    ]
    for method, path, handler in table:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    return app


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class _Handlers:
    def __init__(self, fake):
        self.fake = fake

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        fake = self.fake
        sid = request.query.get("clientId") or uuid.uuid4().hex
        sock = web.WebSocketResponse(max_msg_size=0)
        await sock.prepare(request)
        fake.sockets[sid] = (sock, request, {})
        await fake.send("status", {"status": fake.exec_info(), "sid": sid}, sid, force=True)
        running = fake.running
        if running is not None and running.client_id == sid and fake.last_node_id is not None:
            await fake.send("executing", {"node": fake.last_node_id}, sid)   # no prompt_id, as the real one
        first = True
        try:
            async for msg in sock:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                was_first, first = first, False
                if was_first and isinstance(data, dict) and data.get("type") == "feature_flags":   # first only
                    fake.sockets[sid][2].update(data.get("data") or {})
                    await fake.send("feature_flags", fake.features(), sid, force=True)
        finally:
            if sid in fake.sockets and fake.sockets[sid][0] is sock:
                del fake.sockets[sid]
        return sock

    async def system_stats(self, request):
        return _json(self.fake.system_stats())

    async def features(self, request):
        return _json(self.fake.features())

    async def get_prompt(self, request):
        return _json(self.fake.exec_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        fake = self.fake
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.Response(status=500, text=_CRASH)
        if not isinstance(body, dict) or "prompt" not in body:
            err = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                   "extra_info": {}}
            return _json({"error": err, "node_errors": {}}, 400)
        prompt = body["prompt"]
        if fake.take_validation_fault() and isinstance(prompt, dict) and prompt:
            first = next(iter(prompt))
            cls = prompt[first].get("class_type") if isinstance(prompt[first], dict) else None
            err = {"type": "custom_validation_failed", "message": "Custom validation failed for node",
                   "details": "fault - injected validation error", "extra_info": {"input_name": "fault"}}
            top = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                   "details": "", "extra_info": {}}
            return _json({"error": top, "node_errors": {first: {"errors": [err], "dependent_outputs": [],
                                                                "class_type": cls}}}, 400)
        try:
            verdict = validate(prompt, fake.object_info_all(), fake.input_exists)
        except MalformedPrompt:
            return web.Response(status=500, text=_CRASH)
        if verdict.status != 200:
            return _json(verdict.body, verdict.status)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        extra["create_time"] = int(time.time() * 1000)
        job = Job(fake.next_number(), prompt_id, prompt, extra, verdict.outputs)
        await fake.enqueue(job)
        return _json({"prompt_id": prompt_id, "number": job.number, "node_errors": verdict.node_errors})

    async def get_queue(self, request):
        fake = self.fake
        running = [fake.running.queue_entry()] if fake.running else []
        return _json({"queue_running": running, "queue_pending": [j.queue_entry() for j in fake.pending]})

    async def post_queue(self, request):
        body = await _body(request)
        if body.get("clear"):
            self.fake.pending.clear()
        doomed = set(body.get("delete") or [])
        self.fake.pending[:] = [j for j in self.fake.pending if j.prompt_id not in doomed]
        return web.Response(status=200)

    async def interrupt(self, request):
        body = await _body(request)
        running = self.fake.running
        target = body.get("prompt_id")
        if running is not None and (target is None or target == running.prompt_id):
            self.fake.interrupt_requested = True
        return web.Response(status=200)

    async def free(self, request):
        try:
            body = json.loads(await request.text())     # the real handler's request.json() raises
        except ValueError:
            return web.Response(status=500, text=_CRASH)
        self.fake.free_calls.append(body if isinstance(body, dict) else {})
        return web.Response(status=200)

    async def get_history(self, request):
        items = list(self.fake.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items):]
        return _json(dict(items))

    async def get_history_one(self, request):
        pid = request.match_info["prompt_id"]
        entry = self.fake.history.get(pid)
        return _json({pid: entry} if entry is not None else {})

    async def post_history(self, request):
        body = await _body(request)
        if body.get("clear"):
            self.fake.history.clear()
        for pid in body.get("delete") or []:
            self.fake.history.pop(pid, None)
        return web.Response(status=200)

    async def view(self, request: web.Request):
        q = request.query
        filename = q.get("filename", "")
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        path = self.fake.resolve(q.get("type", "output"), q.get("subfolder", ""), filename)
        if path is None:
            return web.Response(status=403)
        if not path.is_file():
            return web.Response(status=404)
        data = path.read_bytes()
        headers = {"Content-Disposition": f'filename="{filename}"'}
        if self.fake.take_view_truncation():
            resp = web.StreamResponse(headers=headers)
            resp.content_type, resp.content_length = "image/png", len(data)
            await resp.prepare(request)
            await resp.write(data[:len(data) // 2])
            request.transport.abort()            # the server died mid-download
            return resp
        return web.Response(body=data, content_type="image/png", headers=headers)

    async def upload(self, request: web.Request):
        post = await request.post()
        image = post.get("image")
        if image is None or not getattr(image, "filename", None):
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        subfolder = str(post.get("subfolder") or "")
        overwrite = str(post.get("overwrite", "")).lower() in ("true", "1")
        folder = self.fake.resolve(kind, subfolder, "")
        if folder is None or "/" in image.filename or "\\" in image.filename or ".." in image.filename:
            return web.Response(status=400)
        data = image.file.read()
        name = _free_name(folder, image.filename, data, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return _json({"name": name, "subfolder": subfolder, "type": kind})

    async def object_info(self, request):
        return _json(self.fake.object_info_all())

    async def object_info_one(self, request):
        info = self.fake.object_info_all()
        cls = request.match_info["node_class"]
        return _json({cls: info[cls]} if cls in info else {})

    async def models(self, request):
        return _json(["checkpoints", "configs", "loras", "vae", "vae_approx", "upscale_models"])

    async def models_folder(self, request):
        folder = request.match_info["folder"]
        if folder == "checkpoints" and self.fake.models_status != 200:
            return web.Response(status=self.fake.models_status)
        if folder == "checkpoints":
            return _json(list(self.fake.checkpoints))
        if folder in ("configs", "loras", "vae", "vae_approx", "upscale_models"):
            return _json([])
        if folder in self.fake.model_files and self.fake.model_routes:
            return _json(list(self.fake.model_files[folder]))
        return web.Response(status=404)


async def _body(request: web.Request) -> dict:
    try:
        data = json.loads(await request.text() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _free_name(folder: Path, name: str, data: bytes, overwrite: bool) -> str:
    """Same name + same bytes reuses the file; other bytes get `name (1).png` unless overwrite."""
    if overwrite:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, i = name, 1
    while (folder / candidate).exists():
        if (folder / candidate).read_bytes() == data:
            return candidate
        candidate = f"{stem} ({i}){dot}{ext}"
        i += 1
    return candidate
