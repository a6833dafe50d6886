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
- no AWS_ENDPOINT_URL* is set, and every client reaches *.amazonaws.com:
  a publish goes to AWS itself;
- the release's SHA256SUMS verifies and template.sar.yaml points under
  s3://BUCKET/imds-guard/VERSION/;
- BUCKET's policy lets the Serverless Application Repository's principal
  read that prefix for this account only (`aws:SourceAccount`), which the
  second form checks from a file (the policy to add is printed);
- the bucket belongs to the account the credentials act in (every S3 call
  carries ExpectedBucketOwner: bucket names are global);
- the objects already under that prefix, if any, are the release's bytes
  (written only if absent: a release is never overwritten).

Then it uploads the three zips, README.md and LICENSE under the prefix and
runs `sam publish --fail-on-same-version` (a new application, private, or
a new version of it; a version SAR already has is refused).
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


def covers(pattern, value, fold=False):
    """IAM's wildcard match: `*` any run, `?` one character; actions are
    matched ignoring case (`fold`), ARNs are not."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.I if fold else 0) is not None


def may_reach_sar(st):
    """Whether a statement's principal could be SAR's service principal."""
    if "NotPrincipal" in st:
        return True
    principal = st.get("Principal", {})
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    return any(p in ("*", SAR) for k in ("Service", "AWS") for p in listed(principal.get(k, [])))


def grants_release_reads(st, objects):
    """Whether an Allow statement can grant s3:GetObject on the release's
    objects (NotAction and NotResource are read as granting: too wide to
    reason about)."""
    if "NotAction" in st:
        return True
    if not any(covers(a, "s3:GetObject", fold=True) for a in listed(st.get("Action", []))):
        return False
    if "NotResource" in st:
        return True
    return any(covers(r, objects + "event.zip") for r in listed(st.get("Resource", [])))


def kept_to(st, account):
    """Whether the statement's condition keeps it to calls made for
    `account`: aws:SourceAccount equal to it alone, or aws:SourceArn naming
    only this account's SAR applications. Condition keys ignore case."""
    for op, keys in (st.get("Condition") or {}).items():
        for key, values in keys.items():
            values = listed(values)
            if key.lower() == "aws:sourceaccount" and op in ("StringEquals", "StringLike") and values == [account]:
                return True
            if key.lower() == "aws:sourcearn" and op in ("ArnEquals", "ArnLike", "StringEquals", "StringLike") and values and all(
                re.fullmatch(rf"arn:aws[a-z-]*:serverlessrepo:[a-z0-9-]+:{account}:applications/[A-Za-z0-9_-]+", v) for v in values
            ):
                return True
    return False


def policy_problem(policy, bucket, version, account):
    """None when SAR's principal may read the release's objects and every
    statement that could let it do so keeps it to `account`; else why not.
    Without that condition, any account's SAR application could name
    these objects (the confused deputy)."""
    objects = f"arn:aws:s3:::{bucket}/imds-guard/{version}/"
    granting = [
        st
        for st in listed(policy.get("Statement", []))
        if st.get("Effect") == "Allow" and may_reach_sar(st) and grants_release_reads(st, objects)
    ]
    if not granting:
        return f"no statement lets {SAR} read s3://{bucket}/imds-guard/{version}/"
    loose = [st.get("Sid", f"statement {i + 1}") for i, st in enumerate(granting) if not kept_to(st, account)]
    if loose:
        return (
            f"{', '.join(loose)} can let {SAR} read s3://{bucket}/imds-guard/{version}/ "
            f"without aws:SourceAccount {account} (alone): any account's application "
            "could then read the release through SAR"
        )
    return None


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
    for name in sorted(env):
        if name.startswith("AWS_ENDPOINT_URL") and env[name]:
            return f"{name} is set ({env[name]}): a publish goes to AWS itself"
    return None


def release_problem(out, bucket):
    sums = os.path.join(out, "SHA256SUMS")
    if not os.path.exists(sums):
        return f"{sums} is missing: run make dist", None
    files = {}
    with open(sums, encoding="utf-8") as f:
        for line in f:
            digest, _, rel = line.rstrip("\n").partition("  ")
            if not os.path.isfile(os.path.join(out, rel)):
                return f"{rel}, listed in SHA256SUMS, is missing", None
            with open(os.path.join(out, rel), "rb") as g:
                if hashlib.sha256(g.read()).hexdigest() != digest:
                    return f"{rel} does not match SHA256SUMS", None
            files[rel] = digest
    if "template.sar.yaml" not in files:
        return "template.sar.yaml is not in the release (SHA256SUMS)", None
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
    # The three functions' zips, the README and the licence: a template
    # naming fewer would publish an application SAR cannot deploy whole.
    want = {f"functions/{z}" for z in ("event.zip", "sweep.zip", "outputs.zip")} | {"README.md", "LICENSE"}
    if set(uploads.values()) != want:
        missing = sorted(want - set(uploads.values()))
        if missing:
            return f"template.sar.yaml does not name {', '.join(missing)}", None
        return f"template.sar.yaml names other files than the release's five: {sorted(set(uploads.values()) - want)}", None
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
    region = session.region_name
    sts, s3, sar = (session.client(name) for name in ("sts", "s3", "serverlessrepo"))
    # A profile's endpoint_url (or any other override) is refused too.
    for client in (sts, s3, sar):
        host = client.meta.endpoint_url.split("://", 1)[-1].split("/", 1)[0]
        if not re.search(r"\.amazonaws\.com(\.cn)?$", host):
            return refuse(f"{client.meta.service_model.service_name} would be reached at {host}, not AWS")
    me = sts.get_caller_identity()
    account = me["Account"]
    print(f"publish: imds-guard {version} to the Serverless Application Repository in {account} {region}, as {me['Arn']}")
    # Every S3 call names the owner: a bucket of the same name in another
    # account (names are global) is refused by S3 itself.
    owner = {"ExpectedBucketOwner": account}
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket, **owner)["Policy"])
    except s3.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
            return refuse(f"the policy of bucket {bucket} (owner {account}) could not be read: {e}")
        policy = {}
    why = policy_problem(policy, bucket, version, account)
    if why:
        return refuse(
            why,
            "add this statement to the bucket's policy:\n"
            + json.dumps(policy_statement(bucket, version, account), indent=2),
        )
    for key, rel in sorted(uploads.items()):
        with open(os.path.join(out, rel), "rb") as f:
            data = f.read()
        # Written only if absent (S3's conditional write): a release is
        # never overwritten, and two publishes cannot race one another.
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", **owner)
            said = "uploaded"
        except s3.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                return refuse(f"s3://{bucket}/{key} could not be written: {e}")
            have = s3.get_object(Bucket=bucket, Key=key, **owner)["Body"].read()
            if have != data:
                return refuse(f"s3://{bucket}/{key} holds other bytes than {rel}: a release is never overwritten")
            said = "already there, the same bytes"
        print(f"publish: s3://{bucket}/{key} {said} ({len(data):,} B)")
    sam = [
        os.path.join(os.path.dirname(sys.executable), "sam"),
        "publish",
        "--template",
        os.path.join(out, "template.sar.yaml"),
        "--region",
        region,
        "--semantic-version",
        version,
        # A version SAR already has is an error, not a silent metadata update.
        "--fail-on-same-version",
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
