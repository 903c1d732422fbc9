"""The SBOM as an OCI 1.1 referrer and a signed attestation, in a real registry without the
referrers API (distribution 2.8): the fallback index kept, others' entries never dropped."""

from __future__ import annotations

import base64
import json
import subprocess

import cosign_reference
from wasmpod.referrers import (OCI_INDEX, attach_sbom, compact_json, compose_referrer, discover, push_referrer,
                               resolve_subject, upload_bytes)
from wasmpod.signing import sign_image

EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def small_sbom() -> bytes:
    return compact_json({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                         "metadata": {"component": {"type": "application", "name": "fractalify", "version": "0.2.0"}},
                         "components": [{"type": "library", "name": "png", "version": "0.17.7",
                                         "purl": "pkg:cargo/png@0.17.7"}]})


def skopeo_raw(reference: str) -> dict:
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_sbom_is_a_referrer_with_subject_artifact_type_and_empty_config(pushed):
    attached = attach_sbom(pushed.client, pushed.reference, small_sbom())
    registry = pushed.reference.registry
    referrer = skopeo_raw(f"{registry}/fractalify@{attached.referrer_digest}")
    assert referrer["artifactType"] == "application/vnd.cyclonedx+json"
    assert referrer["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}
    assert referrer["subject"]["digest"] == pushed.digest
    assert referrer["subject"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = referrer["layers"]
    assert layer["mediaType"] == "application/vnd.cyclonedx+json"
    assert cosign_reference.blob(registry, "fractalify", layer["digest"]) == small_sbom()
    index = skopeo_raw(f"{registry}/fractalify:{pushed.digest.replace(':', '-')}")
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"] == [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "digest": attached.referrer_digest, "size": index["manifests"][0]["size"],
                                   "artifactType": "application/vnd.cyclonedx+json"}]
    assert attached.listed_in == pushed.digest.replace(":", "-")


def test_the_fallback_index_keeps_others_entries_and_a_repeat_adds_nothing(pushed):
    """Another tool's referrer (an SPDX document with annotations) is listed first; ours is added after it."""
    subject = resolve_subject(pushed.client, pushed.reference)
    spdx = upload_bytes(pushed.client, "fractalify", "application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')
    upload_bytes(pushed.client, "fractalify", "application/vnd.oci.empty.v1+json", b"{}")
    foreign_manifest = compose_referrer(subject, "application/spdx+json", spdx, {}, {"by": "another tool"})
    push_referrer(pushed.client, subject, foreign_manifest, "application/spdx+json", {"by": "another tool"})
    foreign_entry = skopeo_raw(f"{pushed.reference.registry}/fractalify:{pushed.digest.replace(':', '-')}")["manifests"][0]
    attach_sbom(pushed.client, pushed.reference, small_sbom())
    attach_sbom(pushed.client, pushed.reference, small_sbom())
    index = skopeo_raw(f"{pushed.reference.registry}/fractalify:{pushed.digest.replace(':', '-')}")
    assert [m["artifactType"] for m in index["manifests"]] == ["application/spdx+json", "application/vnd.cyclonedx+json"]
    assert index["manifests"][0] == foreign_entry
    assert foreign_entry["annotations"] == {"by": "another tool"}


def test_with_a_key_the_sbom_is_a_dsse_attestation_at_att(pushed, cosign_key):
    attached = attach_sbom(pushed.client, pushed.reference, small_sbom(), key=cosign_key)
    registry = pushed.reference.registry
    manifest = skopeo_raw(f"{registry}/fractalify:{attached.attestation_tag}")
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "", "predicateType": "https://cyclonedx.org/bom"}
    envelope = json.loads(cosign_reference.blob(registry, "fractalify", layer["digest"]))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert cosign_reference.dsse_verifies(envelope, cosign_key.public.pem())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://cyclonedx.org/bom"
    assert statement["subject"] == [{"name": f"{registry}/fractalify", "digest": {"sha256": pushed.digest[7:]}}]
    assert statement["predicate"] == json.loads(small_sbom())
    attach_sbom(pushed.client, pushed.reference, small_sbom(), key=cosign_key)  # again: nothing added
    assert len(skopeo_raw(f"{registry}/fractalify:{attached.attestation_tag}")["layers"]) == 1


def test_discover_lists_signatures_attestations_and_referrers(pushed, cosign_key):
    sign_image(pushed.client, pushed.reference, cosign_key)
    attached = attach_sbom(pushed.client, pushed.reference, small_sbom(), key=cosign_key)
    found = discover(pushed.client, pushed.reference)
    kinds = [(a.kind, a.where) for a in found.attachments]
    hex_digest = pushed.digest[7:]
    assert kinds == [("signature", f"sha256-{hex_digest}.sig"), ("attestation", f"sha256-{hex_digest}.att"),
                     ("application/vnd.cyclonedx+json", attached.referrer_digest)]
    assert found.referrers_source == f"fallback index sha256-{hex_digest}"


def test_a_document_that_is_not_cyclonedx_is_refused(pushed):
    import pytest

    from wasmpod.errors import UserError

    with pytest.raises(UserError, match="not a CycloneDX document"):
        attach_sbom(pushed.client, pushed.reference, b'{"spdxVersion": "SPDX-2.3"}')


def test_with_the_referrers_api_no_fallback_index_is_written_and_discover_asks_the_api(registry, tmp_path):
    """Against a registry that has the API (a proxy doing what ACR does; none here has it)."""
    from signing_kit import TINY_MODULE, push_module_bytes
    from referrers_proxy import ReferrersApiProxy
    from wasmpod.oci_client import RegistryClient, Transport
    from wasmpod.reference import ImageReference

    with ReferrersApiProxy(registry.address) as proxy:
        client = RegistryClient(proxy.address, Transport.choose(proxy.address), None)
        reference = ImageReference(proxy.address, "fractalify", "v1")
        digest = push_module_bytes(client, reference, tmp_path, TINY_MODULE)
        attached = attach_sbom(client, reference, small_sbom())
        assert attached.listed_in == "referrers API"
        assert cosign_reference.manifest(registry.address, "fractalify", digest.replace(":", "-")) is None
        found = discover(client, reference)
        assert found.referrers_source == "referrers API"
        assert [(a.kind, a.where) for a in found.attachments] == [("application/vnd.cyclonedx+json",
                                                                   attached.referrer_digest)]
