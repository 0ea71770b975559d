"""`vidstore export` (`make export`): a feature set as one float32 .npy per video plus a JSON index,
for code that reads per-video arrays (ActionFormer, TriDet and the like).

config.py   ExportConfig: FEATURES=, OUT=, FORMAT=, SPLIT=, one field per option
run.py      export(cfg): the files, each written atomically, the index last
"""

from pipeline.lazy import lazy_exports

# Imported on first use, so that reading ExportConfig (the command line's options) does not load torch.
PUBLIC = {"export": "run"}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
