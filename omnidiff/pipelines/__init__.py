"""Task pipelines over a trained model folder: text, captioning, VQA, text-to-image, ASR, TTS, robot policy."""

from omnidiff.pipelines.base import DiffusionPipeline, generation_settings
from omnidiff.pipelines.captioning import CaptioningPipeline, VQAPipeline
from omnidiff.pipelines.speech import ASRPipeline, TTSPipeline
from omnidiff.pipelines.text import TextPipeline
from omnidiff.pipelines.text_to_image import TextToImagePipeline
from omnidiff.pipelines.vla import VLAPolicy

CaptionPipeline = CaptioningPipeline  # the shorter name the README uses

PIPELINES = {"text": TextPipeline, "caption": CaptioningPipeline, "vqa": VQAPipeline, "t2i": TextToImagePipeline,
             "asr": ASRPipeline, "tts": TTSPipeline, "vla": VLAPolicy}

__all__ = ["PIPELINES", "ASRPipeline", "CaptionPipeline", "CaptioningPipeline", "DiffusionPipeline", "TTSPipeline", "TextPipeline",
           "TextToImagePipeline", "VLAPolicy", "VQAPipeline", "generation_settings"]
