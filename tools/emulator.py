#!/usr/bin/env python3
"""Small helper for the demo: seeds and reads the local AWS emulator.

Talks only to MOTO_ENDPOINT (127.0.0.1), with the dummy credentials that
tools/with-moto.sh sets. Subcommands:
  topic NAME                       create an SNS topic, print its ARN
  launch [--tokens T] [--hop N] [--region R]  launch one instance, print its id
  show ID [--region R]             print the instance's metadata options and tags
  event FIXTURE ID [--region R]    print FIXTURE as CloudTrail would write it for ID
  messages TOPIC_ARN               print what was published to the topic
"""
import argparse
import json
import os
import sys
import urllib.request

import boto3

ENDPOINT = os.environ.get("MOTO_ENDPOINT")
if not ENDPOINT or not ENDPOINT.startswith("http://127.0.0.1:"):
    sys.exit("emulator.py: MOTO_ENDPOINT must point at the local emulator (run under tools/with-moto.sh)")


def client(service, region):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=region)


def describe(region, iid):
    out = client("ec2", region).describe_instances(InstanceIds=[iid])
    return out["Reservations"][0]["Instances"][0]


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("topic"); t.add_argument("name")
    l = sub.add_parser("launch"); l.add_argument("--tokens", default="optional"); l.add_argument("--hop", type=int, default=1)
    l.add_argument("--region", default="us-east-1"); l.add_argument("--name", default="demo-web-1")
    s = sub.add_parser("show"); s.add_argument("id"); s.add_argument("--region", default="us-east-1")
    e = sub.add_parser("event"); e.add_argument("fixture"); e.add_argument("id"); e.add_argument("--region", default="us-east-1")
    m = sub.add_parser("messages"); m.add_argument("topic")
    a = p.parse_args()

    if a.cmd == "topic":
        print(client("sns", "us-east-1").create_topic(Name=a.name)["TopicArn"])
    elif a.cmd == "launch":
        out = client("ec2", a.region).run_instances(
            ImageId="ami-0c02fb55956c7d316", InstanceType="t3.micro", MinCount=1, MaxCount=1,
            MetadataOptions={"HttpTokens": a.tokens, "HttpPutResponseHopLimit": a.hop, "HttpEndpoint": "enabled"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": a.name}]}])
        print(out["Instances"][0]["InstanceId"])
    elif a.cmd == "show":
        i = describe(a.region, a.id)
        mo = i["MetadataOptions"]
        tags = ", ".join(f"{t['Key']}={t['Value']}" for t in i.get("Tags", []))
        print(f"  {a.id}  HttpTokens={mo['HttpTokens']}  HttpEndpoint={mo['HttpEndpoint']}  "
              f"HopLimit={mo['HttpPutResponseHopLimit']}  tags: {tags or '-'}")
    elif a.cmd == "event":
        ev = json.load(open(a.fixture))
        i = describe(a.region, a.id)
        mo = i["MetadataOptions"]
        ev["region"] = a.region
        ev["detail"]["awsRegion"] = a.region
        item = ev["detail"]["responseElements"]["instancesSet"]["items"][0]
        item.update(instanceId=a.id, imageId=i["ImageId"])
        item["metadataOptions"].update(httpTokens=mo["HttpTokens"], httpEndpoint=mo["HttpEndpoint"],
                                       httpPutResponseHopLimit=mo["HttpPutResponseHopLimit"])
        item["tagSet"] = {"items": [{"key": t["Key"], "value": t["Value"]} for t in i.get("Tags", [])]}
        ev["detail"]["responseElements"]["instancesSet"]["items"] = [item]
        print(json.dumps(ev, indent=2))
    elif a.cmd == "messages":
        data = json.load(urllib.request.urlopen(f"{ENDPOINT}/moto-api/data.json"))
        for topic in data["sns"]["Topic"]:
            if topic["arn"] != a.topic:
                continue
            for _id, message, subject, attrs, _group in topic["sent_notifications"]:
                print(f"  Subject: {subject}")
                print("  Attributes: " + ", ".join(f"{k}={v['Value']}" for k, v in sorted(attrs.items())))
                for line in message.splitlines():
                    print("  " + line)


if __name__ == "__main__":
    main()
