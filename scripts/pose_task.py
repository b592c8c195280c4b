"""Bundle MediaPipe's legacy pose models into a ``.task`` file that Tasks' ``PoseLandmarker`` loads.

    python scripts/pose_task.py POSE_DETECTION.tflite POSE_LANDMARK.tflite OUT.task

The legacy ``pose_detection.tflite`` and ``pose_landmark_{lite,full,heavy}.tflite`` (from the mediapipe 0.10.21
wheel, Apache-2.0) carry no TFLite metadata, and Tasks refuses a float input without ``NormalizationOptions``. This
adds exactly that metadata (detector input in [-1, 1]: mean 127.5, std 127.5; landmark input in [0, 1]: mean 0,
std 255) with the maintained metadata writer of ``tflite-support`` and zips the two files under the names the
``PoseLandmarker`` graph looks for (``pose_detector.tflite``, ``pose_landmarks_detector.tflite``).

``tflite-support`` 0.4.4 pins ``protobuf<4`` (mediapipe needs a newer one), so run this with a Python of its own:
``python -m venv /tmp/tfls && /tmp/tfls/bin/pip install tflite-support==0.4.4`` (the metadata writer imports from
``tensorflow_lite_support.metadata.python.metadata_writers``; mediapipe 1.2.3's own copy fails to import). The tests
use the file it makes from the shared legacy models when it is there (``tests/conftest.py``: ``pose_task``).
"""
from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

#: (file name inside the bundle, normalisation mean, std) of the detector and the landmark model.
PARTS = (("pose_detector.tflite", 127.5, 127.5), ("pose_landmarks_detector.tflite", 0.0, 255.0))


def with_metadata(src: Path, dst: Path, mean: float, std: float) -> None:
    """Write ``src`` with image-input NormalizationOptions metadata (and plain output entries) to ``dst``."""
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer, writer_utils

    model = writer_utils.load_file(str(src))
    image = metadata_info.InputImageTensorMd(
        name="image", norm_mean=[mean], norm_std=[std], color_space_type=schema.ColorSpaceType.RGB,
        tensor_type=writer_utils.get_input_tensor_types(model)[0],
    )
    outputs = [metadata_info.TensorMd(name=f"output_{i}") for i in range(len(writer_utils.get_output_tensor_types(model)))]
    writer = metadata_writer.MetadataWriter.create_from_metadata_info(
        model, general_md=metadata_info.GeneralMd(name=dst.stem), input_md=[image], output_md=outputs)
    writer_utils.save_file(writer.populate(), str(dst))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(__doc__.strip().splitlines()[2].strip() + "\n")
        return 2
    detector, landmarks, out = (Path(a) for a in argv)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(Path(tmp) / "bundle.task", "w") as bundle:
            for (name, mean, std), src in zip(PARTS, (detector, landmarks), strict=True):
                with_metadata(src, Path(tmp) / name, mean, std)
                bundle.write(Path(tmp) / name, name)
        out.write_bytes((Path(tmp) / "bundle.task").read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
