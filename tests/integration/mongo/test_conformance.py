"""Conformance suite: pymongo against the stand-in test server or a real MongoDB.

Every test here asserts real MongoDB behaviour, so the same suite passes
against a real server (``MONGODB_TEST_URI=mongodb://... pytest
tests/integration/mongo``). Tests marked ``stand_in_only`` exercise the
stand-in process itself and are skipped when ``MONGODB_TEST_URI`` is set.
"""

import datetime
import hashlib
import os
import socket
import struct
import time
import uuid

import bson
import pytest
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError, WriteError

RAW = CodecOptions(document_class=RawBSONDocument)
TZ_AWARE = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.STANDARD)

stand_in_only = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_TEST_URI")),
    reason="exercises the stand-in mongo_test_server itself (process and raw protocol level); MONGODB_TEST_URI points at a real server",
)


# ---------------------------------------------------------------------------
# Handshake and diagnostics

def test_handshake_ping_and_build_info(client):
    assert client.admin.command("ping")["ok"] == 1.0
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
    assert hello["maxMessageSizeBytes"] == 48000000
    assert hello["maxWriteBatchSize"] == 100000
    assert hello["maxWireVersion"] >= 17
    assert isinstance(hello["logicalSessionTimeoutMinutes"], int)
    assert isinstance(hello["connectionId"], int)
    assert isinstance(hello["localTime"], datetime.datetime)
    legacy = client.admin.command("isMaster")
    assert legacy["ismaster"] is True
    build = client.admin.command("buildInfo")
    assert isinstance(build["version"], str)
    version_array = build["versionArray"]
    assert len(version_array) == 4 and all(isinstance(part, int) for part in version_array)
    assert build["version"].startswith("%d.%d." % (version_array[0], version_array[1]))


def test_server_info(client):
    info = client.server_info()
    assert info["ok"] == 1.0
    assert isinstance(info["version"], str)
    assert info["versionArray"][0] >= 4


def test_health_probe_commands(db):
    db.probe.insert_many([{"n": i} for i in range(5)])
    status = db.client.admin.command("serverStatus")
    assert isinstance(status["host"], str) and status["host"]
    assert isinstance(status["version"], str)
    assert status["uptime"] >= 0
    assert status["connections"]["current"] >= 1
    stats = db.command("dbStats")
    assert stats["collections"] >= 1
    assert stats["objects"] == 5
    assert db.command("collStats", "probe")["count"] == 5


def test_repl_set_get_status_matches_topology(client):
    hello = client.admin.command("hello")
    if "setName" in hello:
        status = client.admin.command("replSetGetStatus")
        assert status["set"] == hello["setName"]
        assert any(member["stateStr"] == "PRIMARY" for member in status["members"])
    else:
        with pytest.raises(OperationFailure) as excinfo:
            client.admin.command("replSetGetStatus")
        assert excinfo.value.code == 76
        assert "not running with --replSet" in str(excinfo.value)


def test_unknown_command_is_command_not_found(db):
    with pytest.raises(OperationFailure) as excinfo:
        db.command("nodeopsNoSuchCommand")
    assert excinfo.value.code == 59
    assert excinfo.value.details["codeName"] == "CommandNotFound"


def test_closed_port_fails_fast():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = MongoClient("mongodb://127.0.0.1:%d/?directConnection=true" % port, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
    started = time.monotonic()
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            unreachable.admin.command("ping")
    finally:
        unreachable.close()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------
# Cursors

def test_bulk_insert_then_batched_iteration(db, recorded):
    expected = [{"_id": i, "n": i * 2, "s": "doc-%05d" % i} for i in range(10000)]
    result = db.items.insert_many(expected)
    assert len(result.inserted_ids) == 10000
    rclient, recorder = recorded
    cursor = rclient[db.name].items.find({}, batch_size=100)
    docs = list(cursor)
    assert docs == expected
    assert not cursor.alive
    find_reply = recorder.replies("find")[-1]
    assert len(find_reply["cursor"]["firstBatch"]) == 100
    get_mores = recorder.replies("getMore")
    assert len(get_mores) in (99, 100)  # a real server may need one more (empty) batch to see the end
    assert all(len(reply["cursor"]["nextBatch"]) <= 100 for reply in get_mores)
    assert all(reply["cursor"]["id"] != 0 for reply in get_mores[:-1])
    assert get_mores[-1]["cursor"]["id"] == 0
    assert all(cmd["batchSize"] == 100 for cmd in recorder.commands("getMore"))
    assert not recorder.commands("killCursors")


def test_cursor_closed_early_is_killed(db, recorded):
    db.items.insert_many([{"_id": i} for i in range(100)])
    rclient, recorder = recorded
    cursor = rclient[db.name].items.find({}, batch_size=10)
    assert next(cursor)["_id"] == 0
    cursor_id = cursor.cursor_id
    assert cursor_id
    cursor.close()
    kills = recorder.replies("killCursors")
    assert len(kills) == 1
    assert kills[0]["cursorsKilled"] == [cursor_id]
    with pytest.raises(OperationFailure) as excinfo:
        db.command({"getMore": Int64(cursor_id), "collection": "items"})
    assert excinfo.value.code == 43


# ---------------------------------------------------------------------------
# BSON fidelity

def _every_bson_type():
    return SON([
        ("_id", ObjectId()),
        ("double", 3.25),
        ("infinity", float("inf")),
        ("string", "héllo wörld ☃ 日本"),
        ("document", SON([("z", 1), ("a", SON([("nested", [1, 2, SON([("deep", True)])])])), ("m", "order matters")])),
        ("array", [1, "two", 3.5, None, [4, 5], SON([("six", 6)])]),
        ("empty_document", {}),
        ("empty_array", []),
        ("binary_generic", Binary(b"\x00\x01\x02 generic", 0)),
        ("binary_function", Binary(b"function bytes", 1)),
        ("binary_old", Binary(b"old binary subtype", 2)),
        ("uuid_legacy", Binary(bytes(range(16)), 3)),
        ("uuid", Binary(uuid.UUID("12345678-1234-5678-9abc-def012345678").bytes, 4)),
        ("md5", Binary(hashlib.md5(b"nodeops").digest(), 5)),
        ("binary_user", Binary(b"user defined", 0x80)),
        ("object_id", ObjectId("5f1b2c3d4e5f607182930a1b")),
        ("true", True),
        ("false", False),
        ("date", datetime.datetime(2024, 2, 29, 13, 14, 15, 678000, tzinfo=datetime.timezone.utc)),
        ("null", None),
        ("regex", Regex("^ab+c$", "imx")),
        ("dbref", DBRef("other", ObjectId("5f1b2c3d4e5f607182930a1c"), "otherdb")),
        ("code", Code("function () { return 1; }")),
        ("code_with_scope", Code("function () { return x; }", {"x": 1})),
        ("int32", -42),
        ("int64", Int64(2 ** 40 + 1)),
        ("timestamp", Timestamp(1700000000, 7)),
        ("decimal", Decimal128("12345.678901234567890123456789")),
        ("min_key", MinKey()),
        ("max_key", MaxKey()),
        ("ключ", "значение"),
    ])


def test_every_bson_type_round_trips_byte_identical(db):
    original = _every_bson_type()
    raw = bson.encode(original, codec_options=TZ_AWARE)
    db.types.insert_one(RawBSONDocument(raw))
    back = db.types.with_options(codec_options=RAW).find_one({"_id": original["_id"]})
    assert back.raw == raw
    assert hashlib.sha256(back.raw).hexdigest() == hashlib.sha256(raw).hexdigest()
    decoded = db.types.with_options(codec_options=TZ_AWARE).find_one({"_id": original["_id"]})
    assert decoded == bson.decode(raw, codec_options=TZ_AWARE)
    assert list(decoded.keys()) == list(original.keys())


def test_bson_types_round_trip_through_plain_dicts(db):
    original = _every_bson_type()
    original["_id"] = "dict-insert"
    db.types.with_options(codec_options=TZ_AWARE).insert_one(original)
    back = db.types.with_options(codec_options=TZ_AWARE).find_one({"_id": "dict-insert"})
    assert back == bson.decode(bson.encode(original, codec_options=TZ_AWARE), codec_options=TZ_AWARE)
    assert back["regex"] == original["regex"] and back["decimal"] == original["decimal"] and back["date"] == original["date"]
    assert list(back.keys()) == list(original.keys())
    assert isinstance(back["int64"], Int64)
    assert back["uuid"] == uuid.UUID("12345678-1234-5678-9abc-def012345678")
    assert isinstance(back["uuid_legacy"], Binary) and back["uuid_legacy"].subtype == 3


def test_unicode_database_collection_and_field_names(make_db, client):
    db = make_db("_ünï_日本")
    coll = db["données_коллекция_集合"]
    coll.insert_one({"_id": 1, "名前": "値", "ключ": {"vložený": "ano"}})
    assert db.name in client.list_database_names()
    assert coll.name in db.list_collection_names()
    assert coll.find_one({"ключ.vložený": "ano"}) == {"_id": 1, "名前": "値", "ключ": {"vložený": "ano"}}


def test_large_documents_round_trip(db):
    payloads = []
    for index in range(2):
        doc = SON([("_id", index), ("blob", Binary(os.urandom(15 * 1024 * 1024 + 512 * 1024))), ("tail", "end-%d" % index)])
        payloads.append(bson.encode(doc))
    assert all(15 * 1024 * 1024 < len(p) < 16 * 1024 * 1024 for p in payloads)
    # Both in one insert: a single message of more than 31 MB.
    db.big.insert_many([RawBSONDocument(p) for p in payloads])
    back = list(db.big.with_options(codec_options=RAW).find().sort("_id", ASCENDING))
    assert [hashlib.sha256(d.raw).hexdigest() for d in back] == [hashlib.sha256(p).hexdigest() for p in payloads]


# ---------------------------------------------------------------------------
# Catalog

def test_several_databases_are_listed(make_db, client):
    names = []
    for _attempt in range(3):
        database = make_db()
        database.marker.insert_one({"here": True})
        names.append(database.name)
    listed = client.list_database_names()
    assert set(names) <= set(listed)
    entries = {entry["name"]: entry for entry in client.list_databases()}
    for name in names:
        assert entries[name]["sizeOnDisk"] > 0
        assert entries[name]["empty"] is False


def test_list_collections_reports_options_and_views(db):
    db.create_collection("capped", capped=True, size=1048576, max=100)
    validator = {"qty": {"$gte": 0}}
    db.create_collection("validated", validator=validator, validationLevel="strict", validationAction="error")
    pipeline = [{"$match": {"qty": {"$gt": 1}}}]
    db.create_collection("big_orders", viewOn="validated", pipeline=pipeline)
    infos = {info["name"]: info for info in db.list_collections()}
    assert {"capped", "validated", "big_orders"} <= set(infos)

    capped = infos["capped"]
    assert capped["type"] == "collection"
    assert capped["options"]["capped"] is True
    assert capped["options"]["size"] == 1048576
    assert capped["options"]["max"] == 100
    assert capped["info"]["readOnly"] is False
    assert isinstance(capped["info"]["uuid"], Binary) and capped["info"]["uuid"].subtype == 4
    assert capped["idIndex"]["key"] == {"_id": 1} and capped["idIndex"]["name"] == "_id_"

    validated = infos["validated"]
    assert validated["options"]["validator"] == validator
    assert validated["options"]["validationLevel"] == "strict"
    assert validated["options"]["validationAction"] == "error"

    view = infos["big_orders"]
    assert view["type"] == "view"
    assert view["options"]["viewOn"] == "validated"
    assert view["options"]["pipeline"] == pipeline
    assert view["info"]["readOnly"] is True

    # uuid is stable, filters and nameOnly work
    again = list(db.list_collections(filter={"name": "capped"}))
    assert len(again) == 1 and again[0]["info"]["uuid"] == capped["info"]["uuid"]
    assert db.list_collection_names(filter={"type": "view"}) == ["big_orders"]
    name_only = db.command("listCollections", filter={"name": "validated"}, nameOnly=True)["cursor"]["firstBatch"]
    assert name_only == [{"name": "validated", "type": "collection"}]


def test_views_and_validators_behave(db):
    db.create_collection("orders", validator={"qty": {"$gte": 0}})
    db.create_collection("big_orders", viewOn="orders", pipeline=[{"$match": {"qty": {"$gt": 1}}}])
    db.orders.insert_many([{"_id": i, "qty": i} for i in range(5)])
    with pytest.raises(WriteError) as excinfo:
        db.orders.insert_one({"_id": 99, "qty": -1})
    assert excinfo.value.code == 121
    db.orders.insert_one({"_id": 100, "qty": -5}, bypass_document_validation=True)
    assert [d["_id"] for d in db.big_orders.find().sort("_id", ASCENDING)] == [2, 3, 4]
    assert db.big_orders.count_documents({"qty": {"$lt": 4}}) == 2
    with pytest.raises(OperationFailure) as excinfo:
        db.big_orders.insert_one({"qty": 7})
    assert excinfo.value.code == 166


def test_capped_collection_keeps_newest(db):
    db.create_collection("ring", capped=True, size=1048576, max=10)
    db.ring.insert_many([{"_id": i} for i in range(25)])
    assert [d["_id"] for d in db.ring.find()] == list(range(15, 25))


def test_list_indexes_reports_definitions(db):
    coll = db.indexed
    coll.insert_one({"a": 1})
    coll.create_index([("a", ASCENDING)], unique=True, name="a_unique")
    coll.create_index([("b", ASCENDING), ("c", DESCENDING)])
    coll.create_index("created", expireAfterSeconds=3600)
    coll.create_index("d", partialFilterExpression={"d": {"$gt": 5}})
    coll.create_index("e", sparse=True)
    specs = {spec["name"]: spec for spec in coll.list_indexes()}
    assert set(specs) == {"_id_", "a_unique", "b_1_c_-1", "created_1", "d_1", "e_1"}
    assert list(specs["_id_"]["key"].items()) == [("_id", 1)]
    assert specs["a_unique"]["unique"] is True
    assert list(specs["a_unique"]["key"].items()) == [("a", 1)]
    assert list(specs["b_1_c_-1"]["key"].items()) == [("b", 1), ("c", -1)]
    assert specs["created_1"]["expireAfterSeconds"] == 3600
    assert specs["d_1"]["partialFilterExpression"] == {"d": {"$gt": 5}}
    assert specs["e_1"]["sparse"] is True
    assert all(spec["v"] == 2 for spec in specs.values())
    coll.drop_index("e_1")
    assert "e_1" not in coll.index_information()


def test_unique_index_enforcement(db):
    coll = db.people
    coll.create_index("email", unique=True)
    coll.insert_one({"_id": 1, "email": "a@example.com"})
    with pytest.raises(DuplicateKeyError) as excinfo:
        coll.insert_one({"_id": 2, "email": "a@example.com"})
    assert excinfo.value.code == 11000
    assert excinfo.value.details["keyValue"] == {"email": "a@example.com"}
    assert excinfo.value.details["keyPattern"] == {"email": 1}
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 1, "email": "other@example.com"})

    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 10, "email": "b"}, {"_id": 11, "email": "c"}, {"_id": 12, "email": "b"}, {"_id": 13, "email": "d"}])
    assert bulk.value.details["nInserted"] == 2
    assert [(e["index"], e["code"]) for e in bulk.value.details["writeErrors"]] == [(2, 11000)]
    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 20, "email": "e"}, {"_id": 10, "email": "f"}, {"_id": 21, "email": "b"}, {"_id": 22, "email": "g"}], ordered=False)
    assert bulk.value.details["nInserted"] == 2
    assert sorted(e["index"] for e in bulk.value.details["writeErrors"]) == [1, 2]
    assert coll.count_documents({}) == 5

    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 11}, {"$set": {"email": "a@example.com"}})
    assert coll.find_one({"_id": 11})["email"] == "c"

    # Building a unique index over existing duplicates fails.
    coll.insert_many([{"team": "x", "email": "t1"}, {"team": "x", "email": "t2"}])
    with pytest.raises(OperationFailure) as excinfo:
        coll.create_index("team", unique=True)
    assert excinfo.value.code == 11000
    assert "team_1" not in coll.index_information()


def test_unique_index_missing_fields(db):
    # A sparse unique index ignores documents without the field ...
    db.sparse.create_index("nickname", unique=True, sparse=True)
    db.sparse.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3, "nickname": "n"}])
    with pytest.raises(DuplicateKeyError):
        db.sparse.insert_one({"_id": 4, "nickname": "n"})
    # ... a plain one indexes a missing field as null.
    db.plain.create_index("badge", unique=True)
    db.plain.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError):
        db.plain.insert_one({"_id": 2, "badge": None})
    # ... and a partial one only indexes matching documents.
    db.partial.create_index("code", unique=True, partialFilterExpression={"active": True})
    db.partial.insert_many([{"code": 1, "active": False}, {"code": 1, "active": True}])
    with pytest.raises(DuplicateKeyError):
        db.partial.insert_one({"code": 1, "active": True})


# ---------------------------------------------------------------------------
# Queries

def _query_fixture(db):
    docs = [
        {"_id": i, "n": i, "grp": i % 3, "name": "item%02d" % i,
         "tags": ["even" if i % 2 == 0 else "odd"] + (["five"] if i % 5 == 0 else []),
         "sub": {"x": i * 10, "y": "why"}}
        for i in range(20)
    ]
    docs.append({"_id": 100, "name": "loner"})
    db.q.insert_many(docs)
    return docs


def _ids(cursor):
    return [d["_id"] for d in cursor]


def test_count_documents_and_estimated_count(db):
    _query_fixture(db)
    assert db.q.count_documents({}) == 21
    assert db.q.count_documents({"grp": 1}) == 7
    assert db.q.count_documents({"n": {"$gte": 5}}, skip=3, limit=4) == 4
    assert db.q.count_documents({"n": {"$gte": 18}}, skip=5) == 0
    assert db.q.estimated_document_count() == 21
    assert db.missing.count_documents({}) == 0
    assert db.missing.estimated_document_count() == 0


def test_find_filters(db):
    docs = _query_fixture(db)
    numbered = [d for d in docs if "n" in d]
    assert _ids(db.q.find({"n": {"$gt": 15}})) == [16, 17, 18, 19]
    assert _ids(db.q.find({"n": {"$in": [1, 3, 99]}})) == [1, 3]
    assert _ids(db.q.find({"grp": {"$nin": [0, 1]}})) == [d["_id"] for d in numbered if d["grp"] == 2] + [100]
    assert _ids(db.q.find({"grp": {"$exists": False}})) == [100]
    assert _ids(db.q.find({"grp": None})) == [100]
    assert _ids(db.q.find({"name": {"$regex": "^item1[0-2]$"}})) == [10, 11, 12]
    assert _ids(db.q.find({"name": Regex("^ITEM0[12]", "i")})) == [1, 2]
    assert _ids(db.q.find({"$or": [{"n": 1}, {"name": "loner"}]})) == [1, 100]
    assert _ids(db.q.find({"$and": [{"n": {"$gte": 2}}, {"n": {"$lt": 4}}]})) == [2, 3]
    assert _ids(db.q.find({"sub.x": {"$lte": 20}})) == [0, 1, 2]
    assert _ids(db.q.find({"tags": "five"})) == [0, 5, 10, 15]
    assert _ids(db.q.find({"tags": {"$all": ["odd", "five"]}})) == [5, 15]
    assert _ids(db.q.find({"tags": {"$size": 2}})) == [0, 5, 10, 15]
    assert _ids(db.q.find({"tags": {"$elemMatch": {"$eq": "five"}}, "n": {"$ne": 0}})) == [5, 10, 15]
    assert _ids(db.q.find({"n": {"$not": {"$lt": 18}}})) == [18, 19, 100]
    assert _ids(db.q.find({"n": {"$mod": [7, 0]}})) == [0, 7, 14]
    assert _ids(db.q.find({"name": {"$type": "string"}, "n": {"$type": "int"}}).limit(2)) == [0, 1]


def test_find_sort_skip_limit_projection(db):
    docs = _query_fixture(db)
    numbered = [d for d in docs if "n" in d]
    expected = [d["_id"] for d in sorted(numbered, key=lambda d: (d["grp"], -d["n"]))]
    assert _ids(db.q.find({"n": {"$exists": True}}).sort([("grp", ASCENDING), ("n", DESCENDING)])) == expected
    assert _ids(db.q.find({"n": {"$exists": True}}).sort("n", DESCENDING).skip(3).limit(4)) == [16, 15, 14, 13]
    assert _ids(db.q.find().sort("n", ASCENDING).limit(2)) == [100, 0]  # missing sorts as null, first
    assert db.q.find_one({"_id": 3}, {"name": 1}) == {"_id": 3, "name": "item03"}
    assert db.q.find_one({"_id": 3}, {"name": 1, "_id": 0}) == {"name": "item03"}
    assert db.q.find_one({"_id": 3}, {"sub.x": 1, "_id": 0}) == {"sub": {"x": 30}}
    excluded = db.q.find_one({"_id": 3}, {"tags": 0, "sub": 0})
    assert excluded == {"_id": 3, "n": 3, "grp": 0, "name": "item03"}
    assert list(excluded.keys()) == ["_id", "n", "grp", "name"]


def test_aggregate_basics(db):
    docs = _query_fixture(db)
    totals = {}
    for d in docs:
        if "grp" in d:
            totals.setdefault(d["grp"], [0, 0])
            totals[d["grp"]][0] += d["n"]
            totals[d["grp"]][1] += 1
    result = list(db.q.aggregate([
        {"$match": {"grp": {"$exists": True}}},
        {"$group": {"_id": "$grp", "total": {"$sum": "$n"}, "count": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
        {"$project": {"total": 1, "count": 1}},
    ]))
    assert result == [{"_id": g, "total": t, "count": c} for g, (t, c) in sorted(totals.items())]
    assert list(db.q.aggregate([{"$match": {"grp": 2}}, {"$count": "hits"}])) == [{"hits": 6}]
    assert list(db.q.aggregate([{"$match": {"grp": 7}}, {"$count": "hits"}])) == []
    assert _ids(db.q.aggregate([{"$sort": {"n": -1}}, {"$skip": 1}, {"$limit": 2}])) == [18, 17]


def test_unknown_query_operator_is_an_error(db):
    db.q.insert_one({"n": 1})
    with pytest.raises(OperationFailure) as excinfo:
        list(db.q.find({"n": {"$nodeopsBogus": 1}}))
    assert excinfo.value.code == 2


# ---------------------------------------------------------------------------
# Writes

def test_update_replace_delete_upsert(db):
    coll = db.w
    coll.insert_many([{"_id": i, "n": i, "list": [i]} for i in range(10)])
    result = coll.update_one({"_id": 1}, {"$set": {"name": "one"}, "$inc": {"n": 10}, "$push": {"list": 99}, "$unset": {"missing": ""}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 11, "list": [1, 99], "name": "one"}
    result = coll.update_one({"_id": 1}, {"$set": {"name": "one"}})
    assert (result.matched_count, result.modified_count) == (1, 0)

    result = coll.replace_one({"_id": 2}, {"z": 1, "a": 2})
    assert result.modified_count == 1
    replaced = coll.find_one({"_id": 2})
    assert replaced == {"_id": 2, "z": 1, "a": 2}
    assert list(replaced.keys()) == ["_id", "z", "a"]

    result = coll.update_many({"n": {"$gte": 5}}, {"$inc": {"n": 100}})
    assert (result.matched_count, result.modified_count) == (6, 6)
    assert coll.count_documents({"n": {"$gte": 100}}) == 6  # _id 1 (n 11) and _id 5..9

    result = coll.update_one({"key": "k1"}, {"$set": {"v": 1}, "$setOnInsert": {"created": True}}, upsert=True)
    assert isinstance(result.upserted_id, ObjectId) and result.matched_count == 0
    assert coll.find_one({"_id": result.upserted_id}) == {"_id": result.upserted_id, "key": "k1", "v": 1, "created": True}
    result = coll.update_one({"key": "k1"}, {"$set": {"v": 2}, "$setOnInsert": {"created": False}}, upsert=True)
    assert result.upserted_id is None and result.modified_count == 1
    assert coll.find_one({"key": "k1"})["created"] is True
    result = coll.replace_one({"_id": "custom"}, {"x": 1}, upsert=True)
    assert result.upserted_id == "custom"
    assert coll.find_one({"_id": "custom"}) == {"_id": "custom", "x": 1}

    with pytest.raises(WriteError) as excinfo:
        coll.update_one({"_id": 3}, {"$set": {"_id": 333}})
    assert excinfo.value.code == 66

    after = coll.find_one_and_update({"_id": 4}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    assert after["n"] == 5
    before = coll.find_one_and_update({"_id": 4}, {"$inc": {"n": 1}})
    assert before["n"] == 5
    removed = coll.find_one_and_delete({"_id": 4})
    assert removed["n"] == 6

    assert coll.delete_one({"_id": 0}).deleted_count == 1
    assert coll.delete_many({"n": {"$gte": 100}}).deleted_count == 6
    assert coll.delete_many({"nothing": "matches"}).deleted_count == 0
    assert coll.distinct("_id", {"n": {"$lt": 100}}) == [3]
    assert sorted(coll.distinct("key")) == ["k1"]


def test_drop_collection_and_database(db, client):
    db.keep.insert_one({"x": 1})
    db.gone.insert_one({"x": 1})
    db.gone.drop()
    assert "gone" not in db.list_collection_names()
    assert "keep" in db.list_collection_names()
    db.never_existed.drop()
    client.drop_database(db.name)
    assert db.name not in client.list_database_names()
    assert db.keep.count_documents({}) == 0


# ---------------------------------------------------------------------------
# Stand-in only: process and raw protocol behaviour

def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _attempt in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _op_msg(request_id, body, flags=0, sequences=()):
    sections = b"\x00" + bson.encode(body)
    for identifier, docs in sequences:
        payload = identifier.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        sections += b"\x01" + struct.pack("<i", len(payload) + 4) + payload
    message = struct.pack("<I", flags) + sections
    checksum = flags & 1
    header = struct.pack("<iiii", 16 + len(message) + 4 * checksum, request_id, 0, 2013)
    data = header + message
    return data + struct.pack("<I", _crc32c(data)) if checksum else data


def _read_reply(sock):
    header = _recv_exactly(sock, 16)
    length, _request_id, _response_to, opcode = struct.unpack("<iiii", header)
    payload = _recv_exactly(sock, length - 16)
    if opcode == 2013:
        return bson.decode(payload[5:])
    assert opcode == 1
    return bson.decode(payload[20:])


def _recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


@stand_in_only
def test_raw_protocol_flags_and_legacy_op_query(mongo_uri, db):
    port = int(mongo_uri.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        query = bson.encode({"isMaster": 1})
        sock.sendall(struct.pack("<iiii", 16 + 4 + len(b"admin.$cmd\x00") + 8 + len(query), 1, 0, 2004)
                     + struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query)
        assert _read_reply(sock)["ismaster"] is True
        find_query = bson.encode({"find": "x"})
        sock.sendall(struct.pack("<iiii", 16 + 4 + len(b"admin.$cmd\x00") + 8 + len(find_query), 2, 0, 2004)
                     + struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + find_query)
        assert _read_reply(sock)["code"] == 352
        # checksumPresent: the trailing CRC-32C is accepted.
        sock.sendall(_op_msg(3, {"ping": 1, "$db": "admin"}, flags=1))
        assert _read_reply(sock)["ok"] == 1.0
        # moreToCome: no reply, but the write happens (sequence section, kind 1).
        sock.sendall(_op_msg(4, {"insert": "raw", "$db": db.name, "writeConcern": {"w": 0}}, flags=2, sequences=[("documents", [{"_id": 1}, {"_id": 2}])]))
        sock.sendall(_op_msg(5, {"count": "raw", "$db": db.name}))
        assert _read_reply(sock)["n"] == 2


@stand_in_only
def test_replica_set_mode(server_process):
    server = server_process("--replset", "rs0")
    rs_client = MongoClient("mongodb://127.0.0.1:%d/?replicaSet=rs0" % server.port, serverSelectionTimeoutMS=5000)
    try:
        hello = rs_client.admin.command("hello")
        assert hello["setName"] == "rs0"
        assert hello["isWritablePrimary"] is True
        assert hello["hosts"] == ["127.0.0.1:%d" % server.port] == [hello["primary"]]
        status = rs_client.admin.command("replSetGetStatus")
        assert status["myState"] == 1
        assert [(m["stateStr"], m["state"]) for m in status["members"]] == [("PRIMARY", 1)]
        rs_client.rs_db.c.insert_one({"_id": 1})
        assert rs_client.rs_db.c.find_one() == {"_id": 1}
    finally:
        rs_client.close()


@stand_in_only
def test_sigterm_shuts_down_cleanly(server_process):
    server = server_process()
    held = MongoClient(server.uri, serverSelectionTimeoutMS=5000)
    try:
        held.admin.command("ping")
        held.t.c.insert_one({"x": 1})
        assert server.terminate() == 0
    finally:
        held.close()
    assert "stopped" in server.stderr_text()
