"""Shards written and read back as TorchRec batches; corrupt shards; equal batch counts per rank."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import webdataset as wds

from data_pipelines.contract import DENSE_FEATURES, GSU_NAMES, NEG, POS, PU_POS, SPARSE_FEATURES
from data_pipelines.contract import SCHEMA_VERSION
from data_pipelines.streams.gsu import Sequences
from data_pipelines.streams.labels import Samples
from data_pipelines.manifest import contract_schema
from data_pipelines.streams.shards import ImpressionFeatures, write_shards
from recsys.data import CorruptShardError, ShardDataset, make_loader
from tests.corpus import damage

SCHEMA = {"tasks": ["a", "b"], "features": {"gsu_length": 3}, **contract_schema()}


def features(n: int) -> ImpressionFeatures:
    """Impression i: user 100+i, live 200+i, every other id feature 0; dense [i, -i, 0, ...]; GSU
    'short' holds i % 3 elements with items 10*i, 10*i+1, ...; 'mixed' holds one element with item
    i; the others none."""
    short_len = np.arange(n) % 3
    short_items = np.concatenate([10 * i + np.arange(k) for i, k in enumerate(short_len)])
    def seq(lengths, items):
        return Sequences(lengths.astype(np.int32), {
            "item": items.astype(np.int32), "author": items.astype(np.int32) + 1, "gap": np.ones(len(items), np.int8),
            "watch": np.full(len(items), 2, np.int8), "domain": (items % 2 + 1).astype(np.int8)})
    sequences = {g: seq(np.zeros(n), np.zeros(0, np.int64)) for g in GSU_NAMES}
    sequences |= {"short": seq(short_len, short_items), "mixed": seq(np.ones(n), np.arange(n))}
    dense = np.zeros((n, len(DENSE_FEATURES)), dtype=np.float32)
    dense[:, 0], dense[:, 1] = np.arange(n), -np.arange(n)
    return ImpressionFeatures(
        impression_id=np.arange(n) + 1000, request_ts=np.arange(n) * 1000,
        sparse={f: np.zeros(n, np.int64) for f in SPARSE_FEATURES} | {"user_id": np.arange(n) + 100,
                                                                       "live_item": np.arange(n) + 200},
        dense=dense, sequences=sequences)


def samples(n: int) -> Samples:
    state = np.full((n, 2), NEG, dtype=np.int8)
    state[::2, 0] = POS
    state[1::4, 1] = PU_POS
    return Samples(np.arange(n), np.arange(n) * 1000 + 500, np.zeros(n, np.int8), state)


@pytest.fixture()
def shard_dir(tmp_path):
    # 40 samples, micro-batches of 3, two per shard: 7 shards (six of 6 samples, one of 4).
    write_shards(samples(40), features(40), tmp_path / "s", SCHEMA, micro_batch_size=3, micro_batches_per_shard=2,
                 progress=False)
    return tmp_path / "s"


def test_round_trip_in_time_order(shard_dir):
    batches = list(make_loader(ShardDataset(shard_dir, batch_size=4)))
    assert len(batches) == 10
    first = batches[0]
    assert first.sparse["user_id"].values().tolist() == [100, 101, 102, 103]
    assert first.sparse["live_item"].values().tolist() == [200, 201, 202, 203]
    assert first.sequences["short.item"].lengths().tolist() == [0, 1, 2, 0]
    assert first.sequences["short.item"].values().tolist() == [10, 20, 21]
    assert first.sequences["short.author"].values().tolist() == [11, 21, 22]
    assert first.sequences["mixed.item"].values().tolist() == [0, 1, 2, 3]
    assert first.sequences["mixed.domain"].values().tolist() == [1, 2, 1, 2]
    assert first.sequences["long.item"].lengths().tolist() == [0, 0, 0, 0]
    assert first.dense[:, :2].tolist() == [[0, 0], [1, -1], [2, -2], [3, -3]]
    assert first.states.tolist() == [[POS, NEG], [NEG, PU_POS], [POS, NEG], [NEG, NEG]]
    assert first.labels.tolist() == [[1, 0], [0, 1], [1, 0], [0, 0]]
    assert first.impression_id.tolist() == [1000, 1001, 1002, 1003]
    report = np.concatenate([b.report_ts.numpy() for b in batches])
    assert report.tolist() == [i * 1000 + 500 for i in range(40)]  # every sample once, in report_ts order


def test_shuffled_mode_reads_every_sample_once_in_another_order(shard_dir):
    dataset = ShardDataset(shard_dir, batch_size=4, shuffle=True, seed=1, shuffle_buffer=3)
    ids = np.concatenate([b.impression_id.numpy() for b in make_loader(dataset)])
    assert len(ids) == 40 and len(set(ids.tolist())) == 40
    assert ids.tolist() != sorted(ids.tolist())
    for b in make_loader(dataset):  # features still travel with their sample
        i = b.impression_id.numpy() - 1000
        assert b.sparse["user_id"].values().tolist() == (i + 100).tolist()
        assert b.sequences["short.item"].lengths().tolist() == (i % 3).tolist()


def test_every_rank_gets_the_same_number_of_batches_and_its_own_shards(shard_dir, monkeypatch):
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        # rank 0 holds shards 0, 2, 4, 6 (22 samples, 5 batches); rank 1 shards 1, 3, 5 (18, 4).
        loader = make_loader(ShardDataset(shard_dir, batch_size=4))
        batches = list(loader)
        assert len(loader) == len(batches) == 4
        seen.append(set(np.concatenate([b.impression_id.numpy() for b in batches]).tolist()))
    assert not seen[0] & seen[1]


def test_truncated_shard_is_named(shard_dir):
    shard = shard_dir / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1200])  # inside the first member's data
    with pytest.raises(CorruptShardError, match="shard-000001.tar"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4)))


def test_garbage_member_is_named(shard_dir):
    with wds.TarWriter(str(shard_dir / "shard-000002.tar"), encoder=False) as writer:
        writer.write({"__key__": "mb00000004", "msgpack": b"\x00not msgpack at all"})
        writer.write({"__key__": "mb00000005", "msgpack": b"\x93\x01\x02\x03"})
    with pytest.raises(CorruptShardError, match=r"shard-000002.tar: member mb00000004.msgpack"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4)))


def test_corrupt_shard_can_be_skipped_without_changing_the_batch_count(shard_dir):
    shard = shard_dir / "shard-000003.tar"
    shard.write_bytes(b"this is not a tar file" * 10)
    dataset = ShardDataset(shard_dir, batch_size=4, on_corrupt="skip")
    batches = list(make_loader(dataset))
    assert len(batches) == 10  # refilled from the good shards
    assert dataset.skipped == ["shard-000003.tar"]
    ids = set(np.concatenate([b.impression_id.numpy() for b in batches]).tolist())
    assert not ids & set(range(1018, 1024))  # shard 3 held impressions 18..23


@pytest.mark.slow
def test_corrupt_shard_in_a_worker_process_raises_not_hangs(shard_dir):
    shard = shard_dir / "shard-000004.tar"
    shard.write_bytes(shard.read_bytes()[:700])
    loader = make_loader(ShardDataset(shard_dir, batch_size=2, shuffle=True), num_workers=2)
    with pytest.raises(Exception, match="shard-000004.tar"):
        list(loader)


def test_missing_manifest_and_unknown_shards_are_clear_errors(tmp_path, shard_dir):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        ShardDataset(tmp_path / "nothing", batch_size=4)
    with pytest.raises(ValueError, match="not in the manifest"):
        ShardDataset(shard_dir, batch_size=4, shards=["shard-000099.tar"])


def test_ordered_mode_refuses_several_workers(shard_dir):
    with pytest.raises(ValueError, match="time-ordered mode needs num_workers <= 1"):
        make_loader(ShardDataset(shard_dir, batch_size=4), num_workers=2)


def test_shards_are_written_whole_and_reproducibly(tmp_path):
    for name in ("a", "b"):
        write_shards(samples(10), features(10), tmp_path / name, SCHEMA, micro_batch_size=3,
                     micro_batches_per_shard=2, progress=False)
    for shard in (tmp_path / "a").glob("shard-*.tar"):
        assert shard.read_bytes() == (tmp_path / "b" / shard.name).read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp"))
    shutil.rmtree(tmp_path / "b")


def test_valid_tar_missing_a_member_is_reported_as_truncated(shard_dir):
    shard = shard_dir / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        first = tar.getmembers()[0]
        payload = tar.extractfile(first).read()
    with wds.TarWriter(str(shard), encoder=False) as writer:  # a well-formed tar holding member one only
        writer.write({"__key__": first.name.split(".")[0], "msgpack": payload})
    with pytest.raises(CorruptShardError, match=r"shard-000001.tar: truncated: 1 of 2 micro-batches"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4)))


def test_skip_mode_with_every_shard_corrupt_raises_instead_of_looping(shard_dir):
    for shard in shard_dir.glob("shard-*.tar"):
        shard.write_bytes(b"garbage")
    with pytest.raises(CorruptShardError, match="no readable shard left"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4, on_corrupt="skip")))


def test_a_manifest_of_another_data_contract_or_cut_short_is_refused_naming_it(shard_dir):
    path = shard_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    old_order = ["item", "author", "domain", "gap", "watch"]  # the field order shards had before schema v2
    path.write_text(json.dumps({**manifest, "sequence_fields": old_order}))
    with pytest.raises(ValueError, match=r"manifest.json: \['sequence_fields'\] differ from this code's data contract"):
        ShardDataset(shard_dir, batch_size=4)
    path.write_text(json.dumps({**manifest, "schema_version": SCHEMA_VERSION - 1}))
    with pytest.raises(ValueError, match=rf"manifest.json: shard schema v{SCHEMA_VERSION - 1}, this code reads "
                                         rf"v{SCHEMA_VERSION}"):
        ShardDataset(shard_dir, batch_size=4)
    path.write_text(json.dumps(manifest))
    damage.cut(path)
    with pytest.raises(ValueError, match=r"s/manifest.json: not valid JSON"):
        ShardDataset(shard_dir, batch_size=4)


def test_flipped_bytes_inside_a_member_are_caught_before_any_array_is_built(shard_dir):
    member = damage.flip_member_payload(shard_dir / "shard-000002.tar", 1)  # inside the packed arrays
    with pytest.raises(CorruptShardError, match=rf"shard-000002.tar: member {member}: checksum mismatch"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4)))


def test_a_shard_whose_bytes_changed_outside_its_members_is_caught_by_its_sha256(shard_dir):
    damage.flip_tar_padding(shard_dir / "shard-000005.tar")
    with pytest.raises(CorruptShardError, match="shard-000005.tar: sha256 differs from the manifest's"):
        list(make_loader(ShardDataset(shard_dir, batch_size=4)))


def test_skipped_is_readable_in_the_training_process_with_worker_processes(shard_dir):
    dataset = ShardDataset(shard_dir, batch_size=4, shuffle=True, on_corrupt="skip")
    loader = make_loader(dataset, num_workers=2)
    assert len(list(loader)) == len(loader) == 9  # each worker's floor(its samples / batch)
    assert dataset.skipped == []  # the workers' own lists stay in the workers; the attribute exists here
