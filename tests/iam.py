"""A moto server that enforces IAM, for tests of what a user sees when AWS refuses, and of the policies we generate.

moto checks every request against the IAM policies of the key that signed it once `POST /moto-api/reset-auth`
(body `0`) is made; before that (and after `inf`) it answers anyone. Known limits, by what it does: it ignores
Conditions, checks S3 requests against their real resources, sees every DynamoDB request as resource `*`, and
answers DynamoDB refusals as XML with HTTP 403 (DynamoDB itself answers JSON).
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import boto3
import botocore.exceptions
import moto

from bench import servers

Keys = Tuple[str, str]  # (access key id, secret access key)


@dataclass
class IamServer:
    url: str
    users: Dict[str, Keys] = field(default_factory=dict)

    def _auth(self, count: str) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    def open(self) -> None:
        """Anyone may do anything, on an empty server: set up what the test needs, then `enforce()`."""
        self._auth("inf")
        servers.reset_moto(self.url)
        self.users.clear()

    def enforce(self) -> Keys:
        """From now on every request needs an IAM user's key; returns the key of an `admin` allowed anything.

        First proven: a user allowed only `s3:ListBucket` on a bucket may list it, as on AWS. moto 5.2.6 checks S3
        requests against their API operation (`s3:ListObjectsV2`) instead, which would make every test here fail
        for a reason that is moto's, not ours: say so in one line."""
        admin = self.user("admin", [allow(["*"], ["*"])])
        lister = self.user("iam-probe", [allow(["s3:ListBucket"], ["arn:aws:s3:::iam-probe"])])
        self.client("s3").create_bucket(Bucket="iam-probe")
        self._auth("0")
        try:
            self.client("s3", lister).list_objects_v2(Bucket="iam-probe")
        except botocore.exceptions.ClientError as error:
            raise RuntimeError(f"moto {moto.__version__} does not check S3 requests against IAM actions as AWS "
                               f"does ({error}); install the moto setup.py asks for") from None
        return admin

    def client(self, service: str, keys: Keys = ("testing", "testing")):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=keys[0],
                            aws_secret_access_key=keys[1])

    def user(self, name: str, statements: List[dict]) -> Keys:
        """An IAM user allowed exactly `statements`, and its access key."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        if statements:
            iam.put_user_policy(UserName=name, PolicyName="allowed", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.users[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        return self.users[name]

    def env(self, keys: Keys) -> Dict[str, str]:
        """The environment of a process whose default credential chain is `keys`, pointed at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}


def allow(actions: List[str], resources: List[str]) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def start() -> Tuple[IamServer, object]:
    proc, url = servers.start_moto_server()
    return IamServer(url), proc
