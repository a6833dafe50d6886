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
import unittest

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
        # Without CONFIRM the script stops before importing boto3: it runs
        # with a Python that has none.
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
        for cond, says in (
            ({}, "not at all"),
            ({"StringEquals": {"aws:SourceAccount": "444455556666"}}, "444455556666"),
            ({"StringEquals": {"aws:SourceAccount": [ACCOUNT, "444455556666"]}}, "not only"),
        ):
            why = publish.policy_problem(good_policy(Condition=cond), BUCKET, VERSION, ACCOUNT)
            self.assertIn(says, why)

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


class Dist(unittest.TestCase):
    def test_compare_names_each_file_that_differs(self):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            one, other = os.path.join(a, "r"), os.path.join(b, "r")
            os.makedirs(one)
            fake_release(one)
            shutil.copytree(one, other)
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(dist.compare(one, other), 0)
            with open(os.path.join(other, "SHA256SUMS"), "a", encoding="utf-8") as f:
                f.write(f"{'0' * 64}  imds-guard-x86_64-linux\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(dist.compare(one, other), 1)
            self.assertIn("imds-guard-x86_64-linux: missing in", err.getvalue())

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
