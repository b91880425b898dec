"""The TensorBoard logger's side that writes event files: it runs in a sidecar process (digitsum/sidecar.py).

TensorBoard's writer and protocol buffers take about 0.2 s to import, and writing an
event is Python work: here both happen on the core the run leaves idle, not beside training.
This module imports TensorBoard (never torch), at once, so that a sidecar warmed up before the
run imports torch imports it then (``digitsum.sidecar.warm_up``); every method takes JSON values.
It writes what ``torch.utils.tensorboard.SummaryWriter`` would: scalars as ``simple_value``,
text for TensorBoard's text plugin, PNG images, and a purge event for a resumed run.
"""

from __future__ import annotations

import time

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData
from tensorboard.summary.writer.event_file_writer import EventFileWriter

#: TensorBoard's colorspace of each PNG colour type: grey, RGB, palette (shown as RGB), grey and alpha, RGBA.
_PNG_COLORSPACE = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class EventWriter:
    """One event file in a run directory: opened when the run starts, written per epoch, closed at its end."""

    def __init__(self) -> None:
        self.events: EventFileWriter | None = None

    def open(self, log_dir: str, purge_step: int | None) -> None:
        """Start a new event file in ``log_dir``; ``purge_step``: the first step of a resumed run,
        from which TensorBoard drops what the interrupted process had logged."""
        self.events = EventFileWriter(log_dir)
        if purge_step is not None:
            self._add(Summary(), purge_step, session_log=SessionLog(status=SessionLog.START))

    def text(self, tag: str, text: str, step: int) -> None:
        """``text`` (markdown) under ``<tag>/text_summary``, as TensorBoard's text plugin shows it."""
        plugin = SummaryMetadata.PluginData(plugin_name="text", content=TextPluginData(version=0).SerializeToString())
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))  # fmt: skip
        value = Summary.Value(tag=f"{tag}/text_summary", metadata=SummaryMetadata(plugin_data=plugin), tensor=tensor)
        self._add(Summary(value=[value]), step)

    def scalars(self, values: dict[str, float], step: int, wall_time: float) -> None:
        """Each tag's value at ``step``, written to disk at once (``tensorboard`` shows the epoch as it ends)."""
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._add(summary, step, wall_time)
        self.events.flush()

    def png(self, tag: str, path: str, step: int) -> None:
        """The PNG file at ``path`` as an image, its bytes as they are (not decoded and encoded again)."""
        with open(path, "rb") as file:
            data = file.read()
        # the IHDR chunk, first in every PNG: width and height (4 bytes each), bit depth, colour type
        width, height, colour = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[25]
        image = Summary.Image(height=height, width=width, colorspace=_PNG_COLORSPACE[colour], encoded_image_string=data)
        self._add(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def _add(self, summary: Summary, step: int, wall_time: float | None = None, **fields) -> None:
        event = Event(step=step, wall_time=wall_time or time.time(), **fields)
        if summary.value:
            event.summary.CopyFrom(summary)
        self.events.add_event(event)
