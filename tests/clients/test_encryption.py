"""Volume type encryption through python-cinderclient and openstacksdk: stored
and returned as Cinder's API does, a volume of an encrypted type reports
`encrypted: true` and its encryption metadata, the specs are frozen while the type
is in use, and bad requests change nothing. connection_info's `encrypted` flag is
tested with a real export in test_exports_tgt.py."""

import uuid

import pytest

LUKS = {"provider": "luks", "control_location": "front-end", "cipher": "aes-xts-plain64", "key_size": 256}


def new_type(cinder):
    return cinder.volume_types.create(f"enc-{uuid.uuid4().hex[:8]}")


def test_an_encrypted_type_and_its_volumes_through_cinderclient(agent, cinder):
    vtype = new_type(cinder)
    assert agent.request("GET", f"/types/{vtype.id}/encryption").json() == {}
    created = cinder.volume_encryption_types.create(vtype, dict(LUKS, key_size="256"))
    assert created.volume_type_id == vtype.id and created.key_size == 256 and created.encryption_id
    got = cinder.volume_encryption_types.get(vtype)
    assert (got.provider, got.control_location, got.cipher, got.key_size) == ("luks", "front-end",
                                                                          "aes-xts-plain64", 256)
    assert vtype.id in [e.volume_type_id for e in cinder.volume_encryption_types.list()]
    assert agent.request("GET", f"/types/{vtype.id}/encryption/provider").json() == {"provider": "luks"}
    assert agent.request("GET", f"/types/{vtype.id}/encryption/nope").status_code == 404
    cinder.volume_encryption_types.update(vtype, {"key_size": 512})
    assert cinder.volume_encryption_types.get(vtype).key_size == 512
    r = agent.request("POST", f"/types/{vtype.id}/encryption", {"encryption": LUKS})
    assert r.status_code == 400 and "already exists" in r.text, r.text

    vol = cinder.volumes.create(1, volume_type=vtype.name)
    agent.wait_volume(vol.id, "available")
    assert cinder.volumes.get(vol.id).encrypted is True
    assert agent.create_volume(1)["encrypted"] is False
    meta = agent.request("GET", f"/volumes/{vol.id}/encryption").json()
    assert meta == {"encryption_key_id": None, "provider": "luks", "control_location": "front-end",
                    "cipher": "aes-xts-plain64", "key_size": 512}, meta
    assert agent.request("GET", f"/volumes/{vol.id}/encryption/provider").json() == "luks"
    plain = agent.create_volume(1)
    assert agent.request("GET", f"/volumes/{plain['id']}/encryption").json() == {"encryption_key_id": None}
    for method, body in [("PUT", {"encryption": {"key_size": 128}}), ("DELETE", None)]:
        r = agent.request(method, f"/types/{vtype.id}/encryption/provider", body)
        assert r.status_code == 400 and "Volume type in use" in r.text, r.text
    assert cinder.volume_encryption_types.get(vtype).key_size == 512
    cinder.volumes.delete(vol.id)
    agent.wait_volume(vol.id, "deleted")
    cinder.volume_encryption_types.delete(vtype)
    assert agent.request("GET", f"/types/{vtype.id}/encryption").json() == {}
    assert agent.request("DELETE", f"/types/{vtype.id}/encryption/provider").status_code == 404


def test_openstacksdk_type_encryption_calls(agent, sdk):
    bs = sdk.block_storage
    vtype = bs.create_type(name=f"enc-sdk-{uuid.uuid4().hex[:8]}")
    made = bs.create_type_encryption(vtype, provider="luks", control_location="front-end", key_size=256)
    assert made.encryption_id
    fetched = bs.get_type_encryption(vtype)
    assert (fetched.provider, fetched.key_size) == ("luks", 256)
    bs.update_type_encryption(encryption=fetched, volume_type=vtype, cipher="aes-xts-plain64")
    assert bs.get_type_encryption(vtype).cipher == "aes-xts-plain64"
    bs.delete_type_encryption(encryption=fetched, volume_type=vtype)
    assert agent.request("GET", f"/types/{vtype.id}/encryption").json() == {}


@pytest.mark.parametrize("method,suffix,body,code", [
    ("POST", "", {"encryption": dict(LUKS, control_location="back-end")}, 400),
    ("POST", "", {"encryption": {"control_location": "front-end"}}, 400),
    ("POST", "", {"encryption": {"provider": "luks"}}, 400),
    ("POST", "", {"encryption": dict(LUKS, control_location="middle")}, 400),
    ("POST", "", {"encryption": dict(LUKS, key_size=-1)}, 400),
    ("POST", "", {"encryption": dict(LUKS, key_size="big")}, 400),
    ("POST", "", {"encryption": dict(LUKS, key_size=1.5)}, 400),
    ("POST", "", {"encryption": dict(LUKS, extra="x")}, 400),
    ("POST", "", {"encryption": dict(LUKS, provider=5)}, 400),
    ("POST", "", {"encryption": LUKS, "more": 1}, 400),
    ("POST", "", {"encryption": "luks"}, 400),
    ("PUT", "/provider", {"encryption": {"key_size": 128}}, 404),
    ("DELETE", "/provider", None, 404),
])
def test_bad_encryption_requests_change_nothing(agent, cinder, method, suffix, body, code):
    vtype = new_type(cinder)
    r = agent.request(method, f"/types/{vtype.id}/encryption{suffix}", body)
    assert r.status_code == code, r.text
    assert agent.request("GET", f"/types/{vtype.id}/encryption").json() == {}


def test_unknown_types_and_volumes(agent):
    unknown = uuid.uuid4()
    assert agent.request("GET", f"/types/{unknown}/encryption").status_code == 404
    assert agent.request("POST", f"/types/{unknown}/encryption", {"encryption": LUKS}).status_code == 404
    assert agent.request("GET", f"/volumes/{unknown}/encryption").status_code == 404
