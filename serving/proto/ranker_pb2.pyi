from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Int64List(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class Sequence(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Int64List
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Int64List, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Int64List]
    def __init__(self, fields: _Optional[_Mapping[str, Int64List]] = ...) -> None: ...

class Part(_message.Message):
    __slots__ = ("ids", "dense", "sequences")
    class IdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class DenseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SequencesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Sequence
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Sequence, _Mapping]] = ...) -> None: ...
    IDS_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.ScalarMap[str, int]
    dense: _containers.ScalarMap[str, float]
    sequences: _containers.MessageMap[str, Sequence]
    def __init__(self, ids: _Optional[_Mapping[str, int]] = ..., dense: _Optional[_Mapping[str, float]] = ..., sequences: _Optional[_Mapping[str, Sequence]] = ...) -> None: ...

class Ids(_message.Message):
    __slots__ = ("user_id", "request_ts", "live_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TS_FIELD_NUMBER: _ClassVar[int]
    LIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    request_ts: int
    live_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user_id: _Optional[int] = ..., request_ts: _Optional[int] = ..., live_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("request_id", "user", "candidates", "ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user: Part
    candidates: _containers.RepeatedCompositeFieldContainer[Part]
    ids: Ids
    def __init__(self, request_id: _Optional[str] = ..., user: _Optional[_Union[Part, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Part, _Mapping]]] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ...) -> None: ...

class RankedCandidate(_message.Message):
    __slots__ = ("candidate", "score", "probabilities")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    candidate: int
    score: float
    probabilities: _containers.ScalarMap[str, float]
    def __init__(self, candidate: _Optional[int] = ..., score: _Optional[float] = ..., probabilities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("request_id", "model_generation", "model_push", "model_export", "ranked")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_PUSH_FIELD_NUMBER: _ClassVar[int]
    MODEL_EXPORT_FIELD_NUMBER: _ClassVar[int]
    RANKED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_generation: int
    model_push: int
    model_export: str
    ranked: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    def __init__(self, request_id: _Optional[str] = ..., model_generation: _Optional[int] = ..., model_push: _Optional[int] = ..., model_export: _Optional[str] = ..., ranked: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ...) -> None: ...
