"""Living on a shared desktop: pause rules, autostart, one daemon per folder, ComfyUI health."""
