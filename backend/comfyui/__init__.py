"""ComfyUI HTTP + WebSocket client and API-format workflows."""
