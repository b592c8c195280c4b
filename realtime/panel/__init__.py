"""The web control panel of ``stylecam live --panel`` and ``stylecam panel`` (docs/design.md §1: a leaf room like
``bench``; only ``cli`` imports it).

- :mod:`realtime.panel.hub`: :class:`~realtime.panel.hub.PanelHub`, the meeting point of the live loop and the web
  server: one more :class:`~realtime.pipeline.controls.CommandSource` (the panel sends the same command lines as stdin),
  the state snapshot, and the preview encoder (JPEG off the frame thread, dropped when busy).
- :mod:`realtime.panel.guard`: the security checks (token, Host, Origin, folders).
- :mod:`realtime.panel.server`: the Starlette app and the uvicorn server on its own thread (extra ``stylecam[panel]``).
- ``static/``: the page (HTML/CSS/JS, no build step, nothing fetched from the internet).
"""
