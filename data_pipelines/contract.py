"""The data contract: every fact that the stream writer, the loader, the model, the export and the
ranker must agree on, defined once.

- the tasks, in their canonical order, and the label states a sample gives each of them;
- the codes of the in-room actions in canonical live_actions;
- the domain of a history interaction (and of a sequence element), distinct from padding;
- the request-time features and the GSU sequences' fields, each tuple in its one order;
- how many rows each bucket table needs (bucket 0 is padding everywhere);
- how the arrays of a micro-batch are keyed in a shard, and the layout's version.

Everything else imports these names. The C++ ranker cannot, so the export writes the field order
and the table sizes into `model.json` from here, and both request validators read them there.
"""

from __future__ import annotations

# ---------------------------------------------------------------- tasks and label states
TASKS = ("ctr", "lvtr", "ltr", "cmtr", "gtr")  # click, long view, like, comment, gift

# What a sample says of a task; the loss reads these (pos/neg: BCE, pu_pos: the PU correction,
# masked: nothing). Stored as int8 in every shard.
MASKED, NEG, POS, PU_POS = 0, 1, 2, 3
POSITIVE_STATES = (POS, PU_POS)  # the label is 1

# The `action` column of canonical live_actions: ingestion writes it, the label engines read it.
ACTION_CODES = {"like": 0, "comment": 1, "gift": 2}

# ---------------------------------------------------------------- domains
# Row 0 of the domain bucket table is padding, so neither domain may be 0.
SHORT, LIVE = 1, 2

# ---------------------------------------------------------------- features of a request
# One table row per sample for each sparse feature (row 0: padding / unknown id).
SPARSE_FEATURES = ("user_id", "live_item", "author_id", "category", "live_type", "hour",
                   "user_history_bucket", "user_live_bucket")
# The target live and its author: looked up in the tables of SEQUENCE_ID_FIELDS, in that order.
TARGET_FEATURES = ("live_item", "author_id")
DENSE_FEATURES = ("room_viewers_now", "room_clicks_30s", "room_clicks_5min", "room_impressions_5min",
                  "room_ctr_5min", "room_age_min", "user_history_len", "user_live_history_len")
# The room's real-time state at request time (replay.room_state=false zeroes them).
ROOM_STATE_FEATURES = tuple(f for f in DENSE_FEATURES if f.startswith("room_"))
LIVE_HISTORY_FEATURE = "user_live_history_len"  # log1p(the user's earlier live interactions)

# ---------------------------------------------------------------- GSU sequences
GSU_NAMES = ("short", "long", "aidhard", "livelong", "mixed")
SEQUENCE_ID_FIELDS = ("item", "author")  # rows of the shared item and author tables
SIDE_FIELDS = ("gap", "watch", "domain")  # small bucket tables of the ESU
SEQUENCE_FIELDS = SEQUENCE_ID_FIELDS + SIDE_FIELDS  # the one order of a sequence element's fields
# How the shards store them (numpy dtype names): table rows as int32, the small bucket rows as int8.
SEQUENCE_DTYPES = {"item": "int32", "author": "int32", "gap": "int8", "watch": "int8", "domain": "int8"}
SPARSE_DTYPE, DENSE_DTYPE, LENGTHS_DTYPE = "int32", "float32", "int32"

# ---------------------------------------------------------------- bucket tables
N_LOG_BUCKETS = 16  # log2 buckets 0 .. 15 of counts and durations, stored as rows 1 .. 16
LOG_BUCKET_ROWS = N_LOG_BUCKETS + 1
HOUR_ROWS = 24 + 1  # hour of day h is row h + 1
SIDE_ROWS = {"gap": LOG_BUCKET_ROWS, "watch": LOG_BUCKET_ROWS, "domain": max(SHORT, LIVE) + 1}
BUCKET_TABLE_ROWS = {"hour": HOUR_ROWS, "activity_bucket": LOG_BUCKET_ROWS}  # fixed-size id tables

# ---------------------------------------------------------------- the shard layout's version
# Written into every encoded micro-batch and every stream manifest; a reader refuses any other.
# 2: sequence fields in contract order, domains 1 and 2, side_rows in the manifest; 3: checksums;
# 4: the manifest records the feature spec whole (data_pipelines/streams/features.py FeatureSpec).
SCHEMA_VERSION = 4

# ---------------------------------------------------------------- micro-batch keys
# Per-sample arrays of a micro-batch (dense is [S, len(DENSE_FEATURES)], state [S, tasks]).
SAMPLE_ARRAYS = ("impression_id", "request_ts", "report_ts", "kind", "state", "dense")
_SEQUENCE_PREFIX = "seq."


def sparse_key(feature: str) -> str:
    """The [S] table rows of one sparse feature."""
    return f"sparse.{feature}"


def lengths_key(gsu: str) -> str:
    """The [S] element counts of one GSU's ragged sequences."""
    return f"{_SEQUENCE_PREFIX}{gsu}.lengths"


def sequence_key(gsu: str, field: str) -> str:
    """The [sum of lengths] values of one field of one GSU's sequences."""
    return f"{_SEQUENCE_PREFIX}{gsu}.{field}"


def is_sequence_key(key: str) -> bool:
    return key.startswith(_SEQUENCE_PREFIX)


def micro_batch_keys(gsu_names: tuple[str, ...] | list[str] = GSU_NAMES) -> list[str]:
    """Every key a micro-batch holds."""
    return [*SAMPLE_ARRAYS, *(sparse_key(f) for f in SPARSE_FEATURES),
            *(k for g in gsu_names for k in (lengths_key(g), *(sequence_key(g, f) for f in SEQUENCE_FIELDS)))]
