"""`make zeroshot`: an OpenCLIP feature set classified by its own checkpoint's text tower, no training.

prompts.py  the class names as words, and the prompt templates CLIP's authors wrote for action datasets
run.py      the checkpoint rebuilt from the set's manifest, class and video embeddings, the scores,
            and the same reports a trained run writes (stages/train/evaluate.py)
"""

from pipeline.lazy import lazy_exports

# Public names -> their module, imported on first use (the command line reads the template
# sets' names without loading torch).
PUBLIC = {
    "TEMPLATE_SETS": "prompts",
    "class_words": "prompts",
    "prompts_for": "prompts",
    "ZeroShotRun": "run",
    "zeroshot": "run",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
