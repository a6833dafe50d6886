#!/usr/bin/env python3
"""moto's server, with one of its gaps closed to AWS's documented behaviour.

ModifyInstanceMetadataOptions: AWS keeps every option a request leaves out
("If this parameter is not specified, the existing state is maintained",
EC2 API reference, HttpEndpoint and HttpPutResponseHopLimit); moto 5.2.5
resets them (the endpoint to nothing, the hop limit to 1). The guard sends
only what it changes (HttpTokens, and a hop limit it lowers), so on
unpatched moto every fix would appear to switch the metadata endpoint off.
Nothing else is changed; the other gaps are covered by mocks
(docs/proving.md lists them). Arguments are moto_server's.
"""
import sys

from moto.ec2.models.instances import InstanceBackend

_modify = InstanceBackend.modify_instance_metadata_options


def _keep_omitted(self, instance_id, http_tokens=None, hop_limit=None, http_endpoint=None,
                  dry_run=False, http_protocol=None, metadata_tags=None):
    now = self.get_instance(instance_id).metadata_options
    return _modify(
        self,
        instance_id,
        http_tokens=http_tokens if http_tokens is not None else now.http_tokens,
        hop_limit=hop_limit if hop_limit is not None else now.http_put_response_hop_limit,
        http_endpoint=http_endpoint if http_endpoint is not None else now.http_endpoint,
        dry_run=dry_run,
        http_protocol=http_protocol if http_protocol is not None else now.http_protocol_ipv6,
        metadata_tags=metadata_tags if metadata_tags is not None else now.instance_metadata_tags,
    )


InstanceBackend.modify_instance_metadata_options = _keep_omitted

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
