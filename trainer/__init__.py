"""trainer: Ray-orchestrated multi-source training (one optimizer step over gradients
accumulated across m3w, image_text and video_text), checkpoints, resume, logging."""
