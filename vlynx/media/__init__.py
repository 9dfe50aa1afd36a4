"""Media decoding and writing (PyAV): videos, audio tracks, audio files, depth maps."""
from __future__ import annotations

from vlynx.media.audio import AudioClip, read_audio
from vlynx.media.depth import DepthScene, read_depth_png, read_depth_scene
from vlynx.media.video import VideoClip, read_video, read_video_at, video_duration, write_video

__all__ = [
    "AudioClip",
    "DepthScene",
    "VideoClip",
    "read_audio",
    "read_depth_png",
    "read_depth_scene",
    "read_video",
    "read_video_at",
    "video_duration",
    "write_video",
]
