"""TensorBoard event files, written without torch: ``DIR/tb/`` of a search, a training or a discrete search.

Built on the ``tensorboard`` package's own event writer and summary protocol
buffers rather than ``torch.utils.tensorboard``, so that one writer serves
the training loops and the MPI dispatcher, which never imports torch.  The
dispatcher's board runs in the background (``background=True``): every write
is a queue put, and the import of tensorboard (~0.3 s) and the file I/O
happen in a thread, so rank 0 never makes a rank wait for its charts.

Open with ``tensorboard --logdir runs/``.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

TB_DIR = "tb"


def _scalar_value(tag: str, value: float):
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary.Value(tag=tag, simple_value=float(value))


def _text_value(tag: str, text: str):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)])
    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")], tensor_shape=shape)
    return Summary.Value(tag=tag, metadata=meta, tensor=tensor)


def _image_value(tag: str, rgb):
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    height, width = rgb.shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    return Summary.Value(tag=tag, image=image)


def _layout_value(layout: Mapping[str, Mapping[str, Sequence[str]]]):
    """Custom-scalars charts that overlay every tag matching a regex (TensorBoard's 'Multiline')."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = [
        layout_pb2.Category(
            title=category,
            chart=[
                layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))
                for title, tags in charts.items()
            ],
        )
        for category, charts in layout.items()
    ]
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[layout_pb2.Layout(category=categories).SerializeToString()],
        tensor_shape=TensorShapeProto(),
    )
    return Summary.Value(tag="custom_scalars__config__", metadata=meta, tensor=tensor)


class Board:
    """Scalars, text, images and overlay charts for TensorBoard, in ``log_dir``."""

    def __init__(self, log_dir: Path, background: bool = False):
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._queue: "Optional[queue.Queue[Optional[Callable[[], None]]]]" = None
        self._thread: Optional[threading.Thread] = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="tensorboard", daemon=True)
            self._thread.start()

    # -- what to write --------------------------------------------------------------

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "", walltime: Optional[float] = None) -> None:
        """Every finite number in ``values`` (nested mappings become ``a/b`` tags) as a scalar."""
        flat: Dict[str, float] = {}
        _flatten(values, prefix, flat)
        if flat:
            self._submit(lambda: [_scalar_value(k, v) for k, v in flat.items()], step, walltime)

    def scalars_later(self, make: Callable[[], Mapping[str, Any]], step: int, walltime: Optional[float] = None) -> None:
        """Like :meth:`scalars`, with the values computed by ``make()`` when written (in the background
        thread of a background board: work the caller does not wait for)."""

        def values() -> List[Any]:
            flat: Dict[str, float] = {}
            _flatten(make(), "", flat)
            return [_scalar_value(k, v) for k, v in flat.items()]

        self._submit(values, step, walltime)

    def text(self, tag: str, text: str, step: int) -> None:
        """A text entry (markdown) under ``tag``."""
        self._submit(lambda: [_text_value(tag, text)], step)

    def image(self, tag: str, rgb, step: int) -> None:
        """An RGB ``uint8`` array (H, W, 3) as an image."""
        self._submit(lambda: [_image_value(tag, rgb)], step)

    def layout(self, charts: Mapping[str, Mapping[str, Sequence[str]]]) -> None:
        """Overlay charts: ``{category: {chart title: [tag regex, ...]}}``."""
        self._submit(lambda: [_layout_value(charts)], 0)

    def close(self) -> None:
        """Write what is pending and close the event file."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
        elif self._writer is not None:
            self._writer.close()

    # -- how ------------------------------------------------------------------------

    def _submit(self, values: Callable[[], List[Any]], step: int, walltime: Optional[float] = None) -> None:
        when = time.time() if walltime is None else walltime
        job = lambda: self._write(values(), step, when)  # noqa: E731 - a deferred write
        if self._queue is not None:
            self._queue.put(job)
        else:
            job()

    def _write(self, values: List[Any], step: int, walltime: float) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        if self._writer is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(self.log_dir))
        self._writer.add_event(Event(wall_time=walltime, step=int(step), summary=Summary(value=values)))

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            if job is None:
                break
            try:
                job()
            except Exception:  # noqa: BLE001 - a chart that fails must never end the search
                pass
        if self._writer is not None:
            self._writer.close()


def _flatten(values: Mapping[str, Any], prefix: str, out: Dict[str, float]) -> None:
    import math

    for key, value in values.items():
        tag = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(value, tag, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
