"""From a learner's model to the ranker: full exports (a new base) and, between them, pushes.

The learner trains a DistributedModelParallel model in this process (recsys/learning/learner.py).
TorchRec's delta tracker records which embedding rows each batch looked up, which are the rows the
fused sparse optimizer updates; a push carries those rows' new values and, every `dense_every`
pushes, every dense tensor the ranker serves (export/push.py). A plain copy of the model (the
"serving copy") mirrors what the ranker holds, so that tensors the ranker reads but the trainer does
not (the first layer split by input side, export/request_scorer.py) are derived from it.

A full export takes a minute with AOTInductor, so after the first one it is written in a process of
its own from a snapshot of the model, while learning and pushes onto the current base go on. The
rows touched since the snapshot are collected meanwhile; when the export is ready, the new base's
first push (those rows and the dense tensors as they are then) is written before its model.json, so
a ranker moving to the new base catches up to the present before it serves it.
"""

from __future__ import annotations

import copy
import time
import warnings
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torchrec.distributed.model_tracker.types import DeltaTrackerConfig, TrackingMode

from export.artifact import ExportReport, StagedExport, commit_export, formats_of, metadata, stage_export
from export.export_dir import ExportDir
from export.push import TABLE_PREFIX, encode_push, write_push
from export.request_scorer import RequestLayout, RequestScorer
from export.scorer import CandidateInputs, CandidateScorer, model_id_features
from recsys.model.moment_cross import MomentCrossModel

CONSUMER = "push"


@dataclass(frozen=True)
class PushSettings:
    """conf/online_train.yaml `push:` (one key per field): how often the trainer pushes and exports,
    and what a full export writes."""

    every_s: float  # data time between pushes: Moment's 30-second stream
    full_every_s: float  # a new base: model files re-exported and re-validated
    dense_every: int  # dense tensors in every push (1) or every n-th; rows always
    formats: str  # torchscript, aoti or both: the files each full export writes
    aoti_threads: int  # the intra-op threads the AOTInductor package is compiled for (the ranker's)
    max_candidates: int
    tolerance: float  # a full export is validated against the eager model within this

    def __post_init__(self) -> None:
        formats_of(self.formats)  # refuses an unknown choice, naming it
        if self.dense_every < 1:
            raise ValueError(f"push.dense_every must be at least 1, got {self.dense_every}")
        if self.every_s <= 0 or self.full_every_s < self.every_s:
            raise ValueError(f"push.every_s must be positive and push.full_every_s at least as long, got "
                             f"{self.every_s} and {self.full_every_s}")

    @property
    def every_ms(self) -> int:
        return int(round(self.every_s * 1000))

    @property
    def full_every_ms(self) -> int:
        return int(round(self.full_every_s * 1000))


@dataclass(frozen=True)
class PushRecord:
    sequence: int
    path: Path
    rows: int  # table rows, all tables
    bytes: int
    dense: bool
    seconds: float  # building and writing it
    data_time_ms: int
    learned_unix_ms: int  # when its newest batch was learned


def unsharded_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with every sharded table as one tensor (a view of this process's shard)."""
    out = {}
    with warnings.catch_warnings():  # TorchRec 1.8 hands out ShardedTensor, which torch calls deprecated
        warnings.filterwarnings("ignore", category=FutureWarning)
        for name, value in module.state_dict().items():
            if hasattr(value, "local_shards"):
                shards = value.local_shards()
                if len(shards) != 1 or list(shards[0].metadata.shard_sizes) != list(value.size()):
                    raise NotImplementedError(f"{name}: pushes read whole tables from this process; a table "
                                              "sharded across processes is not supported by the one-process trainer")
                value = shards[0].tensor
            out[name] = value
    return out


class Pusher:
    def __init__(self, trained: torch.nn.Module, serving_copy: MomentCrossModel, request_layout: dict,
                 out_dir: Path, settings: PushSettings, training: Mapping):
        """`trained`: the learner's DistributedModelParallel; `serving_copy`: a plain model of the same
        config (its weights are overwritten here); `out_dir`: the export directory the ranker serves;
        `training`: model.json's "training" section."""
        self.trained = trained
        self.settings = settings
        self.export = ExportDir(out_dir)
        self.formats = formats_of(settings.formats)
        self.layout_spec = request_layout
        self.training = dict(training)
        self.copy = serving_copy.eval()
        self.scorer = RequestScorer(self.copy, RequestLayout.of(self.copy, request_layout)).eval()
        trained.init_torchrec_delta_tracker(DeltaTrackerConfig(tracking_mode=TrackingMode.ID_ONLY,
                                                               consumers=[CONSUMER], delete_on_read=True))
        self.tracker = trained.get_delta_tracker()
        self.meta: dict | None = None
        self.sequence = 0
        self._batches_at_read = 0
        self.batches = 0  # batches learned: the caller counts them with learned()
        self.newest_learned_unix_ms = 0
        self.newest_learned_data_ms = 0
        self._exporter: ProcessPoolExecutor | None = None  # started with the first background export
        self._staging: Future[StagedExport] | None = None
        self._since_snapshot: dict[str, torch.Tensor] = {}
        self._batches_at_snapshot = 0
        self._batches_at_dense = 0  # batches learned when the base served now last got the dense tensors

    def learned(self) -> None:
        """One more batch learned (the delta tracker saw its lookups)."""
        self.batches += 1
        self.newest_learned_unix_ms = int(time.time() * 1000)

    @torch.no_grad()
    def _sync_copy(self, state: Mapping[str, torch.Tensor] | None = None, tables: bool = True) -> None:
        """The serving copy as the trained model is now (without its tables: only what a dense push
        derives from; the tables are read straight from the trained model's rows)."""
        state = unsharded_state(self.trained) if state is None else state
        if not tables:
            state = {k: v for k, v in state.items() if not f"model.{k}".startswith(TABLE_PREFIX)}
        self.copy.load_state_dict(state, strict=tables)
        for name, value in self.scorer.derived_buffers().items():
            getattr(self.scorer, name).copy_(value)

    def _touched(self) -> dict[str, torch.Tensor]:
        """Serving table name -> rows looked up since the last read. The tracker is read only when a
        batch was learned since: TorchRec 1.8 fails (torch.cat of nothing) reading a table with no
        lookup recorded since the consumer's last read."""
        if self.batches == self._batches_at_read:
            return {}
        self._batches_at_read = self.batches
        ids = self.tracker.get_unique_ids(consumer=CONSUMER)
        return {f"model.{fqn}.weight": rows.to(torch.int64) for fqn, rows in ids.items() if rows.numel()}

    def full_export(self, inputs: CandidateInputs) -> ExportReport:
        """The model as it is now as a new base, written, validated and committed before returning.
        `inputs`: a validation batch."""
        return self._commit(stage_export(*self._snapshot(inputs)))

    @property
    def exporting(self) -> bool:
        return self._staging is not None

    def start_full_export(self, inputs: CandidateInputs) -> None:
        """Starts writing the model as it is now as a new base, in a process of its own (a minute
        with AOTInductor), while learning and pushes onto the current base go on here;
        `finish_full_export` puts it in place. A process, not a thread: tracing a module for
        TorchScript or torch.export patches `nn.Module.__call__` for the whole process, and the
        learner's forwards would run into the tracer. `inputs`: a validation batch."""
        if self._staging is not None:
            raise RuntimeError("a full export is already being written")
        if self._exporter is None:
            self._exporter = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._staging = self._exporter.submit(stage_export, *self._snapshot(inputs))

    def _snapshot(self, inputs: CandidateInputs) -> tuple:
        """The arguments of `stage_export` for the model as it is now (a copy of its own: the serving
        copy moves on with the pushes); rows touched from now on are collected for the new base."""
        self._sync_copy()
        self._touched()  # rows touched so far are in the snapshot
        snapshot = copy.deepcopy(self.copy)
        with torch.no_grad():
            expected = CandidateScorer(snapshot, model_id_features(snapshot)).eval()(*inputs)
        meta = metadata(snapshot, self.layout_spec, self.settings.max_candidates, self.training)
        self._since_snapshot = {}
        self._batches_at_snapshot = self.batches
        s = self.settings
        return (snapshot, RequestLayout.of(snapshot, self.layout_spec), meta, self.export.root, inputs, expected,
                s.tolerance, self.formats, s.aoti_threads)

    def finish_full_export(self, wait: bool = False) -> ExportReport | None:
        """Once the new base is written (at once if `wait`), it is put in place (`_commit`). None
        while the export is still being written; the export's error if it failed."""
        if self._staging is None or (not wait and not self._staging.done()):
            return None
        staging, self._staging = self._staging, None
        return self._commit(staging.result())

    @torch.no_grad()
    def _commit(self, staged: StagedExport) -> ExportReport:
        """The new base's first push, holding every row touched since the snapshot and the dense
        tensors now, then the commit (model.json last). A ranker that loads the new base catches up on
        that push before it serves it, so moving to the new base never serves an older model."""
        touched = self._merge(self._since_snapshot, self._touched())
        self.meta, self.sequence = staged.meta, 0
        if touched or self.batches != self._batches_at_snapshot:
            self._write_push(touched, data_time_ms=self.newest_learned_data_ms, dense=True)
        self._batches_at_dense = self.batches  # the new base (with that push) holds the dense tensors of now
        return commit_export(staged)

    @staticmethod
    def _merge(into: dict[str, torch.Tensor], more: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, rows in more.items():
            into[name] = torch.unique(torch.cat([into[name], rows])) if name in into else rows
        return into

    def push(self, data_time_ms: int) -> PushRecord:
        """The rows touched since the previous push (and the dense tensors, when due and changed) as
        the next push onto the current base. Nothing learned since the last dense tensors went out:
        none go out again (a push after a quiet interval is a few hundred bytes, not the whole dense
        part, which the ranker would copy for nothing)."""
        if self.meta is None:
            raise RuntimeError("push before the first full export: there is no base to push onto")
        self.newest_learned_data_ms = int(data_time_ms)
        touched = self._touched()
        if self._staging is not None:  # the next base will need them too
            self._merge(self._since_snapshot, touched)
        due = (self.sequence + 1) % self.settings.dense_every == 0
        return self._write_push(touched, data_time_ms, dense=due and self.batches != self._batches_at_dense)

    @torch.no_grad()
    def _write_push(self, touched: Mapping[str, torch.Tensor], data_time_ms: int, dense: bool) -> PushRecord:
        start = time.perf_counter()
        sequence = self.sequence + 1
        state = unsharded_state(self.trained) if touched or dense else {}
        updatable = self.meta["updatable"]
        tables = {}
        for name, rows in touched.items():
            if name not in updatable["tables"]:
                raise KeyError(f"the delta tracker names {name}, which model.json's updatable tables do not list")
            tables[name] = (rows, state[name.removeprefix("model.")].index_select(0, rows).float())
        dense_tensors = None
        if dense:
            self._sync_copy(state, tables=False)
            serving = self.scorer.serving_tensors()
            dense_tensors = {name: serving[name].detach().float() for name in updatable["dense"]}
            self._batches_at_dense = self.batches
        data = encode_push(self.meta["export_id"], updatable["fingerprint"], sequence, tables, dense_tensors,
                           data_time_ms, self.newest_learned_unix_ms)
        path = write_push(self.export.pushes(self.meta["export_id"]), data, sequence)
        self.sequence = sequence
        return PushRecord(sequence, path, sum(int(r.numel()) for r, _ in tables.values()), len(data), dense,
                          time.perf_counter() - start, int(data_time_ms), self.newest_learned_unix_ms)

    def close(self) -> None:
        """Waits for a full export being written (and commits it); stops its process."""
        if self._staging is not None:
            self.finish_full_export(wait=True)
        if self._exporter is not None:
            self._exporter.shutdown()
