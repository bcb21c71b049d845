"""Is the registry's S3 bucket reachable with its configured credentials? One signed HEAD.

AWS Signature Version 4 (the registry's ``v4auth: true``, the default) is
done here with hashlib/hmac rather than boto3: one ``HEAD /bucket`` request
is all the check needs. :func:`sign_v4` follows AWS's "Signature Version 4
signing process" (canonical request, string to sign, derived key) and is
tested against AWS's published example.

>>> head_bucket(S3Target.from_driver(params), HTTPSettings()).status  # doctest: +SKIP
200
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from regops.http import HTTPSettings, make_session
from regops.secrets import Secret

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_REGION = "us-east-1"  # the registry's s3 driver needs a region; AWS's default one
REGION_HEADER = "x-amz-bucket-region"  # S3 names the bucket's region on a wrong-region answer


@dataclass(frozen=True)
class S3Target:
    """Where the bucket is and the credentials to ask with (from the s3 driver's params)."""

    bucket: str
    region: str
    endpoint: str | None  # regionendpoint (S3-compatible services); None: AWS
    access_key: str | None
    secret_key: Secret | None
    secure: bool = True

    @classmethod
    def from_driver(cls, params: Mapping[str, Any]) -> S3Target:
        secret = params.get("secretkey")
        return cls(
            bucket=str(params.get("bucket") or ""),
            region=str(params.get("region") or DEFAULT_REGION),
            endpoint=str(params["regionendpoint"]) if params.get("regionendpoint") else None,
            access_key=str(params["accesskey"]) if params.get("accesskey") else None,
            secret_key=Secret(str(secret)) if secret else None,
            secure=str(params.get("secure", True)).lower() not in ("false", "0", "no"),
        )

    def bucket_url(self) -> str:
        """Path-style on a given endpoint (as the registry's driver does), virtual-host on AWS."""
        if self.endpoint:
            base = self.endpoint.rstrip("/")
            if "://" not in base:
                base = f"{'https' if self.secure else 'http'}://{base}"
            return f"{base}/{quote(self.bucket)}"
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.bucket}.s3.{self.region}.amazonaws.com/"


@dataclass(frozen=True)
class BucketAnswer:
    status: int
    region: str | None  # the region S3 says the bucket is in, when it says


def sign_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_sha256: str,
    *,
    access_key: str,
    secret_key: Secret,
    region: str,
    service: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date`` and the SigV4 ``Authorization`` header."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    names = sorted(signed)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
        )
    )
    canonical = "\n".join(
        [
            method.upper(),
            quote(parts.path or "/", safe="/-_.~"),
            query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key.reveal()).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = {**headers, "X-Amz-Date": amz_date}
    result["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return result


def head_bucket(
    target: S3Target, http: HTTPSettings, now: datetime.datetime | None = None
) -> BucketAnswer:
    """``HEAD`` the bucket, signed when credentials are configured (else anonymous)."""
    url = target.bucket_url()
    headers: dict[str, str] = {"x-amz-content-sha256": EMPTY_SHA256}
    if target.access_key and target.secret_key:
        headers = sign_v4(
            "HEAD",
            url,
            headers,
            EMPTY_SHA256,
            access_key=target.access_key,
            secret_key=target.secret_key,
            region=target.region,
            service="s3",
            now=now or datetime.datetime.now(datetime.timezone.utc),
        )
    session = make_session(HTTPSettings(timeout=http.timeout, verify=http.verify, max_retries=0))
    try:
        response = session.head(url, headers=headers, allow_redirects=False)
    finally:
        session.close()
    return BucketAnswer(response.status_code, response.headers.get(REGION_HEADER))
