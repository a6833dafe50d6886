#!/usr/bin/env python3
"""publish: a release directory to the Serverless Application Repository,
privately (docs/releasing.md).

Usage:
    CONFIRM=yes tools/publish.py RELEASE_DIR BUCKET
    tools/publish.py --check-policy POLICY.json BUCKET VERSION ACCOUNT

`make publish CONFIRM=yes` runs the first form with the SAM CLI's Python
(boto3). In order, it refuses, changing nothing, unless:

- CONFIRM is `yes` (make takes no --flags);
- the credentials are explicit: AWS_PROFILE, AWS_ACCESS_KEY_ID with
  AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE
  in the environment (never a default profile or an instance's role, found
  by accident), and a region (AWS_REGION or AWS_DEFAULT_REGION);
- AWS_ENDPOINT_URL is unset: a publish goes to AWS itself;
- the release's SHA256SUMS verifies and template.sar.yaml points under
  s3://BUCKET/imds-guard/VERSION/;
- BUCKET's policy lets the Serverless Application Repository's principal
  read that prefix for this account only (`aws:SourceAccount`), which the
  second form checks from a file (the policy to add is printed);
- the objects already under that prefix, if any, are the release's bytes
  (a release is never overwritten).

Then it uploads the three zips, README.md and LICENSE under the prefix and
runs `sam publish` (a new application, private, or a new version of it).
Exit 0 published (or, with --check-policy, the policy is right), 1 refused
or failed (said why), 2 usage.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

SAR = "serverlessrepo.amazonaws.com"


def policy_statement(bucket, version, account):
    """The statement the bucket needs (AWS's SAR guide, with the
    confused-deputy condition)."""
    return {
        "Sid": "ServerlessRepoReadsImdsGuardReleases",
        "Effect": "Allow",
        "Principal": {"Service": SAR},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/imds-guard/*",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
    }


def listed(v):
    return v if isinstance(v, list) else [v]


def covers(pattern, arn):
    """IAM's ArnLike/resource match: `*` and `?` wildcards."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, arn) is not None


def policy_problem(policy, bucket, version, account):
    """None when some statement allows SAR's principal s3:GetObject on the
    release's objects with aws:SourceAccount equal to `account`; else why
    not."""
    objects = f"arn:aws:s3:::{bucket}/imds-guard/{version}/"
    for st in listed(policy.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal", {})
        services = listed(principal.get("Service", [])) if isinstance(principal, dict) else []
        if SAR not in services:
            continue
        if not any(a in ("s3:GetObject", "s3:*", "*") for a in listed(st.get("Action", []))):
            continue
        if not any(covers(r, objects + "event.zip") for r in listed(st.get("Resource", []))):
            continue
        cond = st.get("Condition", {})
        accounts = [
            a
            for op in ("StringEquals", "ArnEquals")
            for a in listed(cond.get(op, {}).get("aws:SourceAccount", []))
        ]
        if accounts == [account]:
            return None
        return (
            f"the statement letting {SAR} read s3://{bucket}/imds-guard/{version}/ "
            f"names aws:SourceAccount {accounts or 'not at all'}, not only {account}: "
            "any account's application could then read the release through SAR"
        )
    return f"no statement lets {SAR} read s3://{bucket}/imds-guard/{version}/"


def refuse(why, extra=None):
    print(f"publish: refused: {why}", file=sys.stderr)
    if extra:
        print(extra, file=sys.stderr)
    return 1


def credentials_problem(env):
    if env.get("CONFIRM") != "yes":
        return "CONFIRM=yes not given (make publish CONFIRM=yes): nothing was sent"
    explicit = (
        env.get("AWS_PROFILE")
        or (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
        or (env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE"))
    )
    if not explicit:
        return (
            "no explicit credentials: set AWS_PROFILE, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE "
            "(the release workflow's OIDC role); a publish never uses credentials "
            "found by default"
        )
    if not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        return "no region: set AWS_REGION (the application is published in one region)"
    if env.get("AWS_ENDPOINT_URL"):
        return f"AWS_ENDPOINT_URL is set ({env['AWS_ENDPOINT_URL']}): a publish goes to AWS itself"
    return None


def release_problem(out, bucket):
    sums = os.path.join(out, "SHA256SUMS")
    if not os.path.exists(sums):
        return f"{sums} is missing: run make dist", None
    files = {}
    with open(sums, encoding="utf-8") as f:
        for line in f:
            digest, _, rel = line.rstrip("\n").partition("  ")
            with open(os.path.join(out, rel), "rb") as g:
                if hashlib.sha256(g.read()).hexdigest() != digest:
                    return f"{rel} does not match SHA256SUMS", None
            files[rel] = digest
    with open(os.path.join(out, "template.sar.yaml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^\s+SemanticVersion:\s*['\"]?([^'\"\s]+)", text, re.M)
    if not m:
        return "template.sar.yaml has no SemanticVersion", None
    version = m.group(1)
    uris = re.findall(r"^\s+(?:CodeUri|ReadmeUrl|LicenseUrl):\s*(\S+)\s*$", text, re.M)
    prefix = f"s3://{bucket}/imds-guard/{version}/"
    uploads = {}
    for u in uris:
        if not u.startswith(prefix):
            return f"template.sar.yaml names {u}, not under {prefix} (make dist ARTIFACT_BUCKET={bucket})", None
        name = u[len(prefix):]
        rel = f"functions/{name}" if name.endswith(".zip") else name
        if rel not in files:
            return f"template.sar.yaml names {u}, whose file is not in the release", None
        uploads[f"imds-guard/{version}/{name}"] = rel
    return None, (version, uploads)


def publish(out, bucket):
    why = credentials_problem(os.environ)
    if why:
        return refuse(why)
    why, found = release_problem(out, bucket)
    if why:
        return refuse(why)
    version, uploads = found
    import boto3  # the SAM CLI's; imported once the refusals are past

    session = boto3.Session()
    me = session.client("sts").get_caller_identity()
    account = me["Account"]
    region = session.region_name
    print(f"publish: imds-guard {version} to the Serverless Application Repository in {account} {region}, as {me['Arn']}")
    s3 = session.client("s3")
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except s3.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
            raise
        policy = {}
    why = policy_problem(policy, bucket, version, account)
    if why:
        return refuse(
            why,
            "add this statement to the bucket's policy:\n"
            + json.dumps(policy_statement(bucket, version, account), indent=2),
        )
    for key, rel in sorted(uploads.items()):
        path = os.path.join(out, rel)
        with open(path, "rb") as f:
            data = f.read()
        try:
            have = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            have = None
        if have is not None and have != data:
            return refuse(f"s3://{bucket}/{key} holds other bytes than {rel}: a release is never overwritten")
        if have is None:
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        print(f"publish: s3://{bucket}/{key} {'already there' if have else 'uploaded'} ({len(data):,} B)")
    sam = [
        os.path.join(os.path.dirname(sys.executable), "sam"),
        "publish",
        "--template",
        os.path.join(out, "template.sar.yaml"),
        "--region",
        region,
        "--semantic-version",
        version,
    ]
    return subprocess.call(sam)


def main(argv):
    if len(argv) == 6 and argv[1] == "--check-policy":
        with open(argv[2], encoding="utf-8") as f:
            policy = json.load(f)
        why = policy_problem(policy, argv[3], argv[4], argv[5])
        if why:
            return refuse(why, json.dumps(policy_statement(argv[3], argv[4], argv[5]), indent=2))
        print("publish: the bucket's policy lets SAR read the release for this account only")
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    return publish(argv[1], argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
