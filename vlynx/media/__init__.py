"""Media decoding and writing (PyAV): videos, audio tracks, audio files, depth maps."""
from __future__ import annotations

from vlynx.media.video import VideoClip, read_video, video_duration, write_video

__all__ = ["VideoClip", "read_video", "video_duration", "write_video"]
