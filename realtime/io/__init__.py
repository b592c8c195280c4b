"""Frames and files in and out: camera and video-file sources, images, audio, media probing, sinks (virtual camera, window, video writer)."""
