"""The sweep benchmark (`make bench`): seeds the emulator with a fleet, sweeps
it with `imds-guard sweep` (the release build), with a bare boto3 loop making
only the calls any sweep must make (the emulator's floor) and, when Cloud
Custodian is installed (`make bench` installs it in .venv-bench), with
`custodian run` and an equivalent `set-metadata-access` policy, each on the
same freshly seeded fleet.

Reports wall time, peak memory and AWS calls per instance; writes the table
to target/bench/sweep.md. Run under tools/with-moto.sh: every address is the
loopback emulator's.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

ENDPOINT = os.environ["MOTO_ENDPOINT"]
REGION = "us-east-1"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARD = os.environ.get("IMDS_GUARD_BIN", os.path.join(HERE, "target/release/imds-guard"))
CUSTODIAN = os.environ.get("CUSTODIAN_BIN", os.path.join(HERE, ".venv-bench/bin/custodian"))
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1000,10000").split(",")]

POLICY = """\
policies:
  - name: require-imdsv2
    resource: ec2
    filters:
      - type: value
        key: MetadataOptions.HttpTokens
        value: optional
      - type: value
        key: State.Name
        op: in
        value: [pending, running, stopping, stopped]
    actions:
      - type: set-metadata-access
        tokens: required
"""


def reset():
    req = urllib.request.Request(ENDPOINT + "/moto-api/reset", method="POST")
    urllib.request.urlopen(req).read()


def seed(n):
    """n instances: 80% at HttpTokens=optional (a quarter of them stopped),
    20% already required."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=ENDPOINT)
    optional = n * 8 // 10
    batches = [(optional, "optional"), (n - optional, "required")]
    stopped = []
    for count, tokens in batches:
        left = count
        while left > 0:
            k = min(left, 500)
            out = ec2.run_instances(
                ImageId="ami-0c02fb55956c7d316",
                MinCount=k,
                MaxCount=k,
                InstanceType="t3.micro",
                MetadataOptions={"HttpTokens": tokens, "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            )
            if tokens == "optional" and len(stopped) < optional // 4:
                stopped += [i["InstanceId"] for i in out["Instances"]][: optional // 4 - len(stopped)]
            left -= k
    for i in range(0, len(stopped), 500):
        ec2.stop_instances(InstanceIds=stopped[i : i + 500])
    return optional


def still_optional():
    # The emulator answers a 10,000-instance describe in about 45 s.
    ec2 = boto3.client(
        "ec2", region_name=REGION, endpoint_url=ENDPOINT, config=Config(read_timeout=600, retries={"max_attempts": 1})
    )
    out = ec2.describe_instances()
    return sum(
        1
        for r in out["Reservations"]
        for i in r["Instances"]
        if i["MetadataOptions"]["HttpTokens"] == "optional" and i["State"]["Name"] != "terminated"
    )


def run(cmd, env=None, cwd=None):
    """Runs cmd under GNU time; returns (wall s, peak RSS MiB, CPU s, stdout).

    The peak is GNU time's reading, not this process's wait4: a child forked
    from this Python process (boto3 loaded) would carry its memory in
    ru_maxrss across exec.
    """
    with tempfile.NamedTemporaryFile("r") as usage:
        start = time.monotonic()
        p = subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", usage.name] + cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        wall = time.monotonic() - start
        rss_kib, user, system = usage.read().split()[-3:]
    if p.returncode not in (0, 1):
        sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"{cmd[0]} exited {p.returncode}")
    return wall, int(rss_kib) / 1024, float(user) + float(system), p.stdout


def bench_guard(n):
    reset()
    to_fix = seed(n)
    env = dict(os.environ, GUARD_MODE="enforce", NOTIFY_TOPIC_ARN="", AWS_REGION=REGION)
    wall, rss, cpu, out = run([GUARD, "sweep", "--region", REGION, "--output", "json"], env=env)
    report = json.loads(out)
    region = report["sweep"]["regions"][0]
    fixed = region["counts"].get("remediated", 0)
    calls = report.get("aws_calls", {})
    left = still_optional()
    assert fixed == to_fix and left == 0, (fixed, to_fix, left)
    return {"wall": wall, "rss": rss, "cpu": cpu, "calls": calls, "fixed": fixed, "left": left}


def bench_custodian(n):
    reset()
    to_fix = seed(n)
    with tempfile.TemporaryDirectory() as tmp:
        policy = os.path.join(tmp, "policy.yml")
        with open(policy, "w") as f:
            f.write(POLICY)
        env = dict(os.environ, AWS_DEFAULT_REGION=REGION)
        wall, rss, cpu, _ = run(
            [CUSTODIAN, "run", "-s", os.path.join(tmp, "out"), "--region", REGION, "--cache-period", "0", policy],
            env=env,
            cwd=tmp,
        )
    left = still_optional()
    return {"wall": wall, "rss": rss, "cpu": cpu, "fixed": to_fix - left, "left": left}


def bench_floor(n):
    """The emulator's floor: only the calls any sweep must make (one listing,
    one modify per instance at optional), from a bare boto3 loop with 8
    threads, no decision, no tags, no report. A sweep near this figure is
    bound by the API, not by its own work."""
    reset()
    to_fix = seed(n)
    ec2 = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=ENDPOINT,
        config=Config(read_timeout=600, retries={"max_attempts": 3}, max_pool_connections=8),
    )
    start = time.monotonic()
    out = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )
    ids = [
        i["InstanceId"]
        for r in out["Reservations"]
        for i in r["Instances"]
        if i["MetadataOptions"]["HttpTokens"] == "optional"
    ]

    def modify(instance_id):
        ec2.modify_instance_metadata_options(InstanceId=instance_id, HttpTokens="required", HttpEndpoint="enabled")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(modify, ids))
    wall = time.monotonic() - start
    left = still_optional()
    assert len(ids) == to_fix and left == 0, (len(ids), to_fix, left)
    return {"wall": wall, "fixed": len(ids)}


def main():
    rows = []
    have_custodian = os.path.exists(CUSTODIAN)
    for n in SIZES:
        g = bench_guard(n)
        total_calls = sum(g["calls"].values())
        row = {
            "n": n,
            "guard": g,
            "calls_per_instance": total_calls / n,
        }
        row["floor"] = bench_floor(n)
        if have_custodian:
            row["custodian"] = bench_custodian(n)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    lines = [
        "| instances | imds-guard sweep: wall (CPU) | peak RSS | AWS calls per instance | emulator floor: bare boto3 loop, wall | Cloud Custodian `custodian run`: wall (CPU) | its peak RSS | speed-up |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        g = r["guard"]
        calls = ", ".join(f"{k} {v}" for k, v in sorted(g["calls"].items()))
        c = r.get("custodian")
        lines.append(
            f"| {r['n']:,} | {g['wall']:.1f} s ({g['cpu']:.2f} s), {g['fixed']:,} fixed | {g['rss']:.1f} MiB "
            f"| {r['calls_per_instance']:.3f} ({calls}) "
            f"| {r['floor']['wall']:.1f} s "
            + (
                f"| {c['wall']:.1f} s ({c['cpu']:.2f} s), {c['fixed']:,} fixed | {c['rss']:.1f} MiB | {c['wall'] / g['wall']:.1f}x |"
                if c
                else "| not installed | | |"
            )
        )
    table = "\n".join(lines)
    os.makedirs(os.path.join(HERE, "target/bench"), exist_ok=True)
    with open(os.path.join(HERE, "target/bench/sweep.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
