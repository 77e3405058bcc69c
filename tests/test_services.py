"""The real S3 (SeaweedFS) and Redis servers of the fixtures answer, check and survive."""

from __future__ import annotations

import socket

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import services

pytestmark = pytest.mark.integration


def _keys(client, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [entry["Key"] for entry in listing.get("Contents", [])]


def test_put_get_list(seaweedfs, s3_prefix):
    client = seaweedfs.boto3_client()
    prefix = s3_prefix.lstrip("/")
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/images/a/layer", Body=b"layer")
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/images/a/json", Body=b"{}")

    body = client.get_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/images/a/layer")["Body"]
    assert body.read() == b"layer"
    assert _keys(client, seaweedfs.bucket, prefix) == [
        f"{prefix}/images/a/json", f"{prefix}/images/a/layer",
    ]


def test_prefixes_are_fresh(seaweedfs, s3_prefix):
    other = seaweedfs.fresh_prefix()
    assert other != s3_prefix
    assert other.startswith("/t-") and s3_prefix.startswith("/t-")
    assert _keys(seaweedfs.boto3_client(), seaweedfs.bucket, s3_prefix.lstrip("/")) == []


def test_wrong_secret_refused(seaweedfs, s3_prefix):
    client = seaweedfs.boto3_client(secret_key="not-the-secret")
    with pytest.raises(ClientError) as raised:
        client.put_object(Bucket=seaweedfs.bucket, Key=f"{s3_prefix[1:]}/x", Body=b"x")
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert _keys(seaweedfs.boto3_client(), seaweedfs.bucket, s3_prefix[1:]) == []


def test_settings_keys_reach_the_server(seaweedfs, s3_prefix):
    keys = seaweedfs.settings_keys(s3_prefix)
    assert keys["storage_path"] == s3_prefix
    assert keys["s3_bucket"] == keys["boto_bucket"] == services.BUCKET
    client = boto3.client(
        "s3", endpoint_url=f"http://{keys['boto_host']}:{keys['boto_port']}",
        region_name="us-east-1", aws_access_key_id=keys["s3_access_key"],
        aws_secret_access_key=keys["s3_secret_key"],
        config=Config(s3={"addressing_style": "path"}),
    )
    client.put_object(Bucket=keys["s3_bucket"], Key=f"{s3_prefix[1:]}/x", Body=b"x")
    assert _keys(seaweedfs.boto3_client(), seaweedfs.bucket, s3_prefix[1:]) == [
        f"{s3_prefix[1:]}/x",
    ]


def test_kill_and_restart_keep_data(seaweedfs, s3_prefix):
    client = seaweedfs.boto3_client()
    key = f"{s3_prefix[1:]}/kept"
    client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"kept")
    endpoint = seaweedfs.endpoint

    seaweedfs.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((seaweedfs.host, seaweedfs.port)).close()
    seaweedfs.restart()

    assert seaweedfs.endpoint == endpoint
    assert client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read() == b"kept"


def test_redis_ping_and_flush(redis_server):
    assert redis_server.command("PING") == "PONG"
    assert redis_server.command("SET", "twistreg:key", "value") == "OK"
    assert redis_server.command("GET", "twistreg:key") == b"value"
    redis_server.flush()
    assert redis_server.command("DBSIZE") == 0


def test_redis_kill_and_restart_on_the_same_port(redis_server):
    port = redis_server.port
    redis_server.kill()
    with pytest.raises(OSError):
        redis_server.command("PING")
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.command("PING") == "PONG"


def test_redis_password_is_checked(redis_server):
    # A server of its own; the fixture's only skips (or fails on CI) where Redis is missing.
    server = services.RedisServer(services.redis_binary(), password="twistreg-test-password")
    try:
        server.start()
        assert server.command("PING") == "PONG"
        server.password = None
        with pytest.raises(services.RedisError, match="NOAUTH"):
            server.command("PING")
    finally:
        server.remove()
