"""Models and the stylizer: model specs and loading (hub, local, random:), downloads, LoRA, the one-frame step, engine selection."""
