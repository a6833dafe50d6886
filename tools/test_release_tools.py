"""Tests of the release tooling that needs no build and no AWS: publish.py's
refusals and bucket-policy check, dist.py's compare and samconfig check.
Run by `make test` (python3 -m unittest discover -s tools)."""

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import types
import unittest
import unittest.mock
import json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


publish = load("publish")
dist = load("dist")

BUCKET, VERSION, ACCOUNT = "releases-bucket", "0.1.0", "111122223333"


def good_policy(**changes):
    st = publish.policy_statement(BUCKET, VERSION, ACCOUNT)
    st.update(changes)
    return {"Version": "2012-10-17", "Statement": [st]}


def fake_release(root, bucket=BUCKET, version=VERSION):
    """A release directory as dist.py lays it out, with stand-in bytes."""
    os.makedirs(os.path.join(root, "functions"))
    files = {
        "functions/event.zip": b"event",
        "functions/sweep.zip": b"sweep",
        "functions/outputs.zip": b"outputs",
        "README.md": b"readme",
        "LICENSE": b"licence",
    }
    prefix = f"s3://{bucket}/imds-guard/{version}"
    files["template.sar.yaml"] = (
        "Metadata:\n  AWS::ServerlessRepo::Application:\n"
        f"    ReadmeUrl: {prefix}/README.md\n    LicenseUrl: {prefix}/LICENSE\n"
        f"    SemanticVersion: {version}\n"
        "Resources:\n"
        + "".join(
            f"  {n.capitalize()}:\n    Properties:\n      CodeUri: {prefix}/{n}.zip\n"
            for n in ("event", "sweep", "outputs")
        )
    ).encode()
    for rel, data in files.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    with open(os.path.join(root, "SHA256SUMS"), "w", encoding="utf-8") as f:
        for rel in sorted(files):
            f.write(f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n")


class Refusals(unittest.TestCase):
    def env(self, **extra):
        base = {"CONFIRM": "yes", "AWS_PROFILE": "release", "AWS_REGION": "us-east-1"}
        base.update(extra)
        return {k: v for k, v in base.items() if v is not None}

    def test_each_missing_condition_is_refused_naming_it(self):
        cases = [
            (self.env(CONFIRM=None), "CONFIRM=yes"),
            (self.env(CONFIRM="y"), "CONFIRM=yes"),
            (self.env(AWS_PROFILE=None), "no explicit credentials"),
            (self.env(AWS_PROFILE=None, AWS_ACCESS_KEY_ID="AKIA"), "no explicit credentials"),
            (self.env(AWS_REGION=None), "no region"),
            (self.env(AWS_ENDPOINT_URL="http://127.0.0.1:5000"), "goes to AWS itself"),
            (self.env(AWS_ENDPOINT_URL_S3="http://127.0.0.1:5000"), "AWS_ENDPOINT_URL_S3 is set"),
        ]
        for env, says in cases:
            why = publish.credentials_problem(env)
            self.assertIsNotNone(why, env)
            self.assertIn(says, why)
        for ok in (
            self.env(),
            self.env(AWS_PROFILE=None, AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="s"),
            self.env(AWS_PROFILE=None, AWS_ROLE_ARN="arn:aws:iam::1:role/r", AWS_WEB_IDENTITY_TOKEN_FILE="/t"),
        ):
            self.assertIsNone(publish.credentials_problem(ok))

    def test_the_command_refuses_before_any_aws_call(self):
        # Without CONFIRM the script stops before it imports boto3 or
        # reads AWS settings: no AWS_* in its environment at all.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "CONFIRM"}
        with tempfile.TemporaryDirectory() as d:
            fake_release(d)
            run = subprocess.run(
                [sys.executable, os.path.join(HERE, "publish.py"), d, BUCKET],
                env=env, capture_output=True, text=True,
            )
        self.assertEqual(run.returncode, 1, run.stderr)
        self.assertIn("refused: CONFIRM=yes not given", run.stderr)


class Release(unittest.TestCase):
    def test_a_release_names_its_uploads_under_the_prefix(self):
        with tempfile.TemporaryDirectory() as d:
            fake_release(d)
            why, (version, uploads) = publish.release_problem(d, BUCKET)
        self.assertIsNone(why)
        self.assertEqual(version, VERSION)
        self.assertEqual(uploads[f"imds-guard/{VERSION}/event.zip"], "functions/event.zip")
        self.assertEqual(uploads[f"imds-guard/{VERSION}/LICENSE"], "LICENSE")
        self.assertEqual(len(uploads), 5)

    def test_a_template_naming_fewer_than_the_five_files_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            fake_release(d)
            path = os.path.join(d, "template.sar.yaml")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            text = "".join(l for l in text.splitlines(True) if "outputs.zip" not in l)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            # SHA256SUMS again, for the edited template.
            with open(os.path.join(d, "SHA256SUMS"), encoding="utf-8") as f:
                sums = f.read().splitlines()
            digest = hashlib.sha256(text.encode()).hexdigest()
            sums = [f"{digest}  template.sar.yaml" if l.endswith("template.sar.yaml") else l for l in sums]
            with open(os.path.join(d, "SHA256SUMS"), "w", encoding="utf-8") as f:
                f.write("\n".join(sums) + "\n")
            why, _ = publish.release_problem(d, BUCKET)
        self.assertIn("does not name functions/outputs.zip", why)

    def test_another_bucket_or_changed_bytes_are_refused(self):
        with tempfile.TemporaryDirectory() as d:
            fake_release(d)
            why, _ = publish.release_problem(d, "other-bucket")
            self.assertIn("not under s3://other-bucket/", why)
            with open(os.path.join(d, "functions", "sweep.zip"), "ab") as f:
                f.write(b"!")
            why, _ = publish.release_problem(d, BUCKET)
            self.assertIn("functions/sweep.zip does not match SHA256SUMS", why)


class BucketPolicy(unittest.TestCase):
    def test_the_printed_statement_passes(self):
        self.assertIsNone(publish.policy_problem(good_policy(), BUCKET, VERSION, ACCOUNT))

    def test_without_the_source_account_or_with_another_it_is_refused(self):
        for cond in (
            {},
            {"StringEquals": {"aws:SourceAccount": "444455556666"}},
            {"StringEquals": {"aws:SourceAccount": [ACCOUNT, "444455556666"]}},
            {"StringNotEquals": {"aws:SourceAccount": "444455556666"}},
        ):
            why = publish.policy_problem(good_policy(Condition=cond), BUCKET, VERSION, ACCOUNT)
            self.assertIn("without aws:SourceAccount 111122223333", why, cond)

    def test_a_source_arn_of_this_accounts_applications_or_any_key_case_passes(self):
        for cond in (
            {"ArnLike": {"aws:SourceArn": f"arn:aws:serverlessrepo:us-east-1:{ACCOUNT}:applications/imds-guard"}},
            {"StringEquals": {"AWS:SourceAccount": ACCOUNT}},
        ):
            self.assertIsNone(publish.policy_problem(good_policy(Condition=cond), BUCKET, VERSION, ACCOUNT), cond)
        other = {"ArnLike": {"aws:SourceArn": "arn:aws:serverlessrepo:us-east-1:444455556666:applications/x"}}
        self.assertIsNotNone(publish.policy_problem(good_policy(Condition=other), BUCKET, VERSION, ACCOUNT))

    def test_any_other_statement_that_could_let_sar_read_must_be_kept_too(self):
        loose = [
            {"Sid": "Wide", "Effect": "Allow", "Principal": {"Service": publish.SAR}, "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{BUCKET}/*"},
            {"Sid": "Star", "Effect": "Allow", "Principal": "*", "Action": "s3:Get*", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
            {"Sid": "Case", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "S3:GETOBJECT",
             "Resource": f"arn:aws:s3:::{BUCKET}/imds-guard/*"},
            {"Sid": "Not", "Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:*",
             "Resource": "*"},
            {"Sid": "NotAction", "Effect": "Allow", "Principal": {"Service": publish.SAR}, "NotAction": "s3:PutObject",
             "Resource": "*"},
        ]
        for st in loose:
            policy = good_policy()
            policy["Statement"].append(st)
            why = publish.policy_problem(policy, BUCKET, VERSION, ACCOUNT)
            self.assertIsNotNone(why, st["Sid"])
            self.assertIn(st["Sid"], why)
        # A statement for someone else, or a Deny, changes nothing.
        policy = good_policy()
        policy["Statement"] += [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "*"},
        ]
        self.assertIsNone(publish.policy_problem(policy, BUCKET, VERSION, ACCOUNT))

    def test_a_statement_for_another_principal_prefix_or_effect_does_not_count(self):
        for changes in (
            {"Principal": {"Service": "lambda.amazonaws.com"}},
            {"Resource": f"arn:aws:s3:::{BUCKET}/other/*"},
            {"Effect": "Deny"},
            {"Action": "s3:PutObject"},
        ):
            why = publish.policy_problem(good_policy(**changes), BUCKET, VERSION, ACCOUNT)
            self.assertIn("no statement lets", why, changes)
        self.assertIn("no statement", publish.policy_problem({}, BUCKET, VERSION, ACCOUNT))


class FakeAws:
    """boto3 as publish() uses it: STS, S3 (a bucket policy and objects,
    with S3's conditional write) and SAR, each at an AWS endpoint."""

    class ClientError(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.response = {"Error": {"Code": code}}

    def __init__(self, policy, objects=None, endpoint="https://{}.us-east-1.amazonaws.com"):
        self.policy, self.objects, self.endpoint, self.calls = policy, dict(objects or {}), endpoint, []

    def Session(self):
        aws = self

        class Client:
            def __init__(self, name):
                self.name = name
                self.meta = types.SimpleNamespace(
                    endpoint_url=aws.endpoint.format(name),
                    service_model=types.SimpleNamespace(service_name=name),
                )
                self.exceptions = types.SimpleNamespace(ClientError=FakeAws.ClientError)

            def get_caller_identity(self):
                return {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/release/x"}

            def get_bucket_policy(self, Bucket, ExpectedBucketOwner):
                aws.calls.append(("get_bucket_policy", Bucket, ExpectedBucketOwner))
                if aws.policy is None:
                    raise FakeAws.ClientError("NoSuchBucketPolicy")
                return {"Policy": json.dumps(aws.policy)}

            def put_object(self, Bucket, Key, Body, IfNoneMatch, ExpectedBucketOwner):
                aws.calls.append(("put_object", Key, IfNoneMatch, ExpectedBucketOwner))
                if Key in aws.objects:
                    raise FakeAws.ClientError("PreconditionFailed")
                aws.objects[Key] = Body

            def get_object(self, Bucket, Key, ExpectedBucketOwner):
                return {"Body": io.BytesIO(aws.objects[Key])}

        return types.SimpleNamespace(region_name="us-east-1", client=Client)


class Publish(unittest.TestCase):
    def run_publish(self, aws, env=None):
        env = env or {"CONFIRM": "yes", "AWS_PROFILE": "release", "AWS_REGION": "us-east-1"}
        ran = []
        with tempfile.TemporaryDirectory() as d, \
                unittest.mock.patch.dict(os.environ, env, clear=True), \
                unittest.mock.patch.dict(sys.modules, {"boto3": aws}), \
                unittest.mock.patch.object(publish.subprocess, "call", lambda argv: ran.append(argv) or 0), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            fake_release(d)
            code = publish.publish(d, BUCKET)
        return code, ran, err.getvalue()

    def test_a_release_is_uploaded_if_absent_then_sam_publish_refuses_a_version_twice(self):
        aws = FakeAws(good_policy())
        code, ran, err = self.run_publish(aws)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(aws.objects), 5)
        self.assertTrue(all(c[-1] == ACCOUNT for c in aws.calls), aws.calls)
        self.assertTrue(all(c[2] == "*" for c in aws.calls if c[0] == "put_object"))
        self.assertEqual(len(ran), 1)
        self.assertEqual(ran[0][1:3], ["publish", "--template"])
        self.assertIn("--fail-on-same-version", ran[0])
        self.assertEqual(ran[0][ran[0].index("--semantic-version") + 1], VERSION)
        # The same release again: the same bytes are there, nothing rewritten.
        code, ran, err = self.run_publish(aws)
        self.assertEqual(code, 0, err)

    def test_other_bytes_under_the_prefix_or_a_loose_policy_stop_it_before_sam(self):
        aws = FakeAws(good_policy(), {f"imds-guard/{VERSION}/sweep.zip": b"not the release"})
        code, ran, err = self.run_publish(aws)
        self.assertEqual((code, ran), (1, []))
        self.assertIn("holds other bytes", err)
        self.assertEqual(aws.objects[f"imds-guard/{VERSION}/sweep.zip"], b"not the release")
        for policy in (None, good_policy(Condition={})):
            aws = FakeAws(policy)
            code, ran, err = self.run_publish(aws)
            self.assertEqual((code, ran, aws.objects), (1, [], {}))
            self.assertIn('"aws:SourceAccount": "111122223333"', err, "the statement to add is printed")

    def test_an_endpoint_that_is_not_aws_stops_it_before_any_call(self):
        aws = FakeAws(good_policy(), endpoint="http://127.0.0.1:4566")
        code, ran, err = self.run_publish(aws)
        self.assertEqual((code, ran, aws.calls), (1, [], []))
        self.assertIn("not AWS", err)


class Dist(unittest.TestCase):
    def test_compare_names_each_file_that_differs(self):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            one, other = os.path.join(a, "r"), os.path.join(b, "r")
            os.makedirs(one)
            fake_release(one)
            shutil.copytree(one, other)
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(dist.compare(one, other), 0)
            with open(os.path.join(other, "SHA256SUMS"), encoding="utf-8") as f:
                sums = f.read()
            # One file's bytes differ, and one file is only in the other.
            zip_line = next(l for l in sums.splitlines() if l.endswith("functions/event.zip"))
            sums = sums.replace(zip_line, f"{'0' * 64}  functions/event.zip")
            with open(os.path.join(other, "SHA256SUMS"), "w", encoding="utf-8") as f:
                f.write(sums + f"{'0' * 64}  imds-guard-x86_64-linux\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(dist.compare(one, other), 1)
            self.assertIn("imds-guard-x86_64-linux: missing in", err.getvalue())
            self.assertIn(f"functions/event.zip: {zip_line.split()[0]} in", err.getvalue())
            self.assertNotIn("functions/sweep.zip", err.getvalue())

    def test_a_binary_names_its_commit_after_its_version(self):
        self.assertEqual(dist.built_from(b"\0imds-guard 0.1.0 (commit 0123456789ab) starting", "0.1.0"), "0123456789ab")
        self.assertEqual(dist.built_from(b"0.1.0 (commit unknown)", "0.1.0"), "unknown")
        self.assertIsNone(dist.built_from(b"0.2.0 (commit 0123456789ab)", "0.1.0"))
        self.assertIsNone(dist.built_from(b"0.1.0 (commit 0123)", "0.1.0"))

    def test_the_release_samconfig_deploys_the_packaged_template_with_known_parameters(self):
        with tempfile.TemporaryDirectory() as d:
            shutil.copyfile(os.path.join(ROOT, "template.yaml"), os.path.join(d, "template.packaged.yaml"))
            with open(os.path.join(ROOT, "samconfig.toml"), encoding="utf-8") as f:
                config = f.read()
            header = "[default.deploy.parameters]\n"
            with open(os.path.join(d, "samconfig.toml"), "w", encoding="utf-8") as f:
                f.write(config.replace(header, header + 'template_file = "template.packaged.yaml"\n'))
            self.assertEqual(dist.samconfig_problems(d), [])
            # A parameter the template does not have is named.
            with open(os.path.join(d, "samconfig.toml"), encoding="utf-8") as f:
                text = f.read()
            with open(os.path.join(d, "samconfig.toml"), "w", encoding="utf-8") as f:
                f.write(text.replace("GuardMode=", "GuardModus="))
            self.assertEqual(
                dist.samconfig_problems(d),
                ["samconfig.toml sets GuardModus, which template.packaged.yaml does not have"],
            )


class Workflows(unittest.TestCase):
    """What zizmor does not decide: which job may hold an OIDC token, and
    what triggers a release."""

    def load(self, name):
        import yaml

        with open(os.path.join(ROOT, ".github", "workflows", name), encoding="utf-8") as f:
            return yaml.safe_load(f)

    def test_only_the_publish_job_can_ask_for_an_oidc_token(self):
        for name in ("ci.yml", "release.yml"):
            wf = self.load(name)
            self.assertNotIn("id-token", wf.get("permissions") or {}, name)
            holders = [j for j, job in wf["jobs"].items() if (job.get("permissions") or {}).get("id-token") == "write"]
            self.assertEqual(holders, ["publish"] if name == "release.yml" else [], name)
        release = self.load("release.yml")
        self.assertEqual(release["permissions"], {})
        self.assertEqual(release["jobs"]["build"]["permissions"], {"contents": "read"})
        # PyYAML reads the key `on` as True.
        self.assertEqual(release[True], {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}})
        self.assertEqual(self.load("ci.yml")["permissions"], {"contents": "read"})

    def test_every_action_is_pinned_by_commit_and_aws_is_reached_through_oidc(self):
        import re

        for name in ("ci.yml", "release.yml"):
            for job in self.load(name)["jobs"].values():
                for step in job["steps"]:
                    if "uses" in step:
                        self.assertRegex(step["uses"], r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$", name)
                    for secret in re.findall(r"secrets\.\w+", str(step)):
                        self.fail(f"{name} uses {secret}: the release needs no stored secret")
        steps = self.load("release.yml")["jobs"]["publish"]["steps"]
        aws = [s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
        self.assertEqual(len(aws), 1)
        self.assertEqual(aws[0]["with"]["audience"], "sts.amazonaws.com")
        self.assertIn("role-to-assume", aws[0]["with"])
        self.assertNotIn("aws-access-key-id", aws[0]["with"])


if __name__ == "__main__":
    unittest.main()
