"""Media decoding and writing (PyAV): videos, audio tracks, audio files, depth maps, 3D scene folders."""
from __future__ import annotations

from vlynx.media.audio import AudioClip, read_audio
from vlynx.media.depth import read_depth_png
from vlynx.media.scene import FrameChoice, Scene, read_scene
from vlynx.media.video import VideoClip, read_video, read_video_at, video_duration, write_video

__all__ = [
    "AudioClip",
    "FrameChoice",
    "Scene",
    "VideoClip",
    "read_audio",
    "read_depth_png",
    "read_scene",
    "read_video",
    "read_video_at",
    "video_duration",
    "write_video",
]
