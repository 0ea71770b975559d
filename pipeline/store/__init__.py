"""The feature store: immutable HDF5 shards, an atomic manifest, claims, and verified reads.

Layout of one feature set (docs/store.md):

    <features_root>/<dataset>/<feature_set_id>/
        manifest.json      written last, atomically; lists only committed shards
        shard-00000.h5     immutable once listed in the manifest
        failures.jsonl     one JSON line per video that could not be processed
        .lock              flock'd while the manifest is read-modify-written
        .claims/00000      flock'd by the process computing shard 0

    shards.py       the shard file format: write (tmp + fsync + rename), read (sha256-checked)
    manifest.py     the typed manifest (Manifest, ShardEntry), its checked reader and only writer
    claims.py       flocks: who computes which shard, who rewrites the manifest
    maintenance.py  verify (checksums, and --repair's policy) and gc (leftovers of crashed runs)
    catalog.py      which sets exist under a root; `store list`'s records and table, `store info`
    sets.py         which set a reference or a dataset names, opening sets, their index and
                    splits, verified feature reads
    stats.py        a training split's standardisation statistics: the one module needing torch,
                    left out of this package's names so the store's commands start without it
    roots.py        where the bytes live: a directory (LocalRoot) or an S3 bucket (S3Root); every
                    read, write, listing, conditional replace, claim and deletion goes through one
    cache.py        the local cache of a bucket's shards, by sha256 (bounded, least recently used out)
    transfer.py     push/pull: a set copied between two roots, shards first, verified, manifest last
    reuse.py        the store's reuse index (.index/reuse.sqlite under the root, a cache):
                    video fingerprints, and which stored row holds a video under given settings

Everything a caller needs is importable from here, `from pipeline import store`, but the
statistics: `from pipeline.store.stats import feature_stats, standardize`.
"""

from ..errors import IntegrityError, ReaderError, StoreError
from .catalog import describe, feature_sets, human_bytes, list_sets, row, table
from .claims import Claim, locked, wait_for
from .maintenance import SetCheck, bad_shards, check_set, garbage, remove_garbage, verify, verify_advice
from .manifest import (
    FAILURES,
    MANIFEST,
    Manifest,
    ShardEntry,
    commit_shard,
    create,
    drop_shards,
    load_manifest,
    mark_complete,
    new_manifest,
    read_manifest,
    replace_shard,
    write_manifest,
)
from .reuse import ReuseIndex, StoredRow, index_path, open_index, settings_key, shard_fingerprints
from .roots import absolute, as_path, display, is_remote, root_of
from .sets import (
    FeatureSet,
    Index,
    Split,
    carve_by_group,
    find_feature_set,
    open_feature_sets,
    read_features,
    read_index,
    read_videos,
    resolve_feature_sets,
    select_split,
    split_names,
    the_set,
    verified_shard,
)
from .shards import RAGGED, RAGGED_FIELDS, SHARD_FIELDS, SHARD_NAME, read_shard, shard_name, video_offsets, write_shard
from .transfer import Copied, copy_set

__all__ = [
    "IntegrityError",
    "ReaderError",
    "StoreError",
    "describe",
    "feature_sets",
    "human_bytes",
    "list_sets",
    "row",
    "table",
    "Claim",
    "locked",
    "wait_for",
    "SetCheck",
    "bad_shards",
    "check_set",
    "garbage",
    "remove_garbage",
    "verify",
    "verify_advice",
    "FAILURES",
    "MANIFEST",
    "Manifest",
    "ShardEntry",
    "commit_shard",
    "create",
    "drop_shards",
    "load_manifest",
    "mark_complete",
    "new_manifest",
    "read_manifest",
    "replace_shard",
    "write_manifest",
    "absolute",
    "as_path",
    "display",
    "is_remote",
    "root_of",
    "ReuseIndex",
    "StoredRow",
    "index_path",
    "open_index",
    "settings_key",
    "shard_fingerprints",
    "FeatureSet",
    "Index",
    "Split",
    "carve_by_group",
    "feature_stats",
    "find_feature_set",
    "open_feature_sets",
    "read_features",
    "read_index",
    "read_videos",
    "resolve_feature_sets",
    "verified_shard",
    "select_split",
    "split_names",
    "standardize",
    "the_set",
    "Copied",
    "RAGGED",
    "RAGGED_FIELDS",
    "copy_set",
    "SHARD_FIELDS",
    "SHARD_NAME",
    "read_shard",
    "shard_name",
    "video_offsets",
    "write_shard",
]
