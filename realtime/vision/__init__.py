"""Pictures to numbers: Canny edges, face detection (MediaPipe) and the framing math (a smoothed crop window)."""
