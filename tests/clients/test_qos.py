"""QoS specs through python-cinderclient and openstacksdk: created, listed,
changed, associated with volume types (front-end only: ember's targets cannot
throttle), shown on the type, and refused cleanly where the request is wrong.
That a front-end spec reaches the hypervisor in connection_info is tested with a
real export in test_exports_tgt.py."""

import uuid

import pytest


def new_type(cinder):
    return cinder.volume_types.create(f"qos-{uuid.uuid4().hex[:8]}")


def test_front_end_specs_through_cinderclient(agent, cinder):
    name = f"gold-{uuid.uuid4().hex[:8]}"
    q = cinder.qos_specs.create(name, {"consumer": "front-end", "total_iops_sec_per_gb": "10", "read_bytes_sec": "5"})
    assert (q.name, q.consumer, q.specs) == (name, "front-end", {"total_iops_sec_per_gb": "10", "read_bytes_sec": "5"})
    assert q.id in [x.id for x in cinder.qos_specs.list()]
    assert cinder.qos_specs.get(q.id).specs == q.specs
    cinder.qos_specs.set_keys(q.id, {"write_iops_sec": "300"})
    cinder.qos_specs.unset_keys(q.id, ["read_bytes_sec"])
    assert cinder.qos_specs.get(q.id).specs == {"total_iops_sec_per_gb": "10", "write_iops_sec": "300"}
    vtype = new_type(cinder)
    cinder.qos_specs.associate(q, vtype.id)
    (assoc,) = cinder.qos_specs.get_associations(q)
    assert (assoc.association_type, assoc.id, assoc.name) == ("volume_type", vtype.id, vtype.name)
    shown = agent.request("GET", f"/types/{vtype.id}").json()["volume_type"]
    assert shown["qos_specs_id"] == q.id
    r = agent.request("DELETE", f"/qos-specs/{q.id}")
    assert r.status_code == 400 and "still in use" in r.text, r.text
    # A type has one QoS spec at most.
    other = cinder.qos_specs.create(f"silver-{uuid.uuid4().hex[:8]}", {"consumer": "front-end"})
    r = agent.request("GET", f"/qos-specs/{other.id}/associate?vol_type_id={vtype.id}")
    assert r.status_code == 400 and "already associated" in r.text, r.text
    cinder.qos_specs.disassociate(q, vtype.id)
    assert cinder.qos_specs.get_associations(q) == []
    assert agent.request("GET", f"/types/{vtype.id}").json()["volume_type"]["qos_specs_id"] is None
    cinder.qos_specs.associate(other, vtype.id)
    cinder.qos_specs.disassociate_all(other)
    assert cinder.qos_specs.get_associations(other) == []
    cinder.qos_specs.associate(q, vtype.id)
    cinder.qos_specs.delete(q, force=True)
    assert agent.request("GET", f"/types/{vtype.id}").json()["volume_type"]["qos_specs_id"] is None
    assert agent.request("GET", f"/qos-specs/{q.id}").status_code == 404
    cinder.qos_specs.delete(other)


def test_back_end_specs_are_never_promised(agent, cinder):
    q = cinder.qos_specs.create(f"be-{uuid.uuid4().hex[:8]}", {"total_iops_sec": "100"})
    assert q.consumer == "back-end", "Cinder's default consumer"
    vtype = new_type(cinder)
    for spec in [q, cinder.qos_specs.create(f"both-{uuid.uuid4().hex[:8]}", {"consumer": "both"})]:
        r = agent.request("GET", f"/qos-specs/{spec.id}/associate?vol_type_id={vtype.id}")
        assert r.status_code == 400 and "cannot throttle" in r.text and "front-end" in r.text, r.text
    assert agent.request("GET", f"/types/{vtype.id}").json()["volume_type"]["qos_specs_id"] is None
    fe = cinder.qos_specs.create(f"fe-{uuid.uuid4().hex[:8]}", {"consumer": "front-end"})
    cinder.qos_specs.associate(fe, vtype.id)
    r = agent.request("PUT", f"/qos-specs/{fe.id}", {"qos_specs": {"consumer": "back-end"}})
    assert r.status_code == 400 and "cannot throttle" in r.text, r.text
    assert cinder.qos_specs.get(fe.id).consumer == "front-end", "nothing changed"


def test_openstacksdk_qos_calls(agent, sdk):
    bs = sdk.block_storage
    q = bs.create_qos_spec(name=f"sdk-{uuid.uuid4().hex[:8]}", consumer="front-end", specs={"read_iops_sec": "50"})
    assert bs.get_qos_spec(q.id).specs == {"read_iops_sec": "50"}
    assert q.id in [x.id for x in bs.qos_specs()]
    vtype = bs.create_type(name=f"sdk-qos-{uuid.uuid4().hex[:8]}")
    bs.associate_qos_spec(q, vtype.id)
    assert [a.id for a in bs.qos_spec_associations(q)] == [vtype.id]
    bs.disassociate_qos_spec(q, vtype.id)
    bs.delete_qos_spec_metadata(q, ["read_iops_sec"])
    assert bs.get_qos_spec(q.id).specs == {}
    bs.delete_qos_spec(q)
    assert agent.request("GET", f"/qos-specs/{q.id}").status_code == 404


@pytest.mark.parametrize("method,path,body,code", [
    ("POST", "/qos-specs", {"qos_specs": {}}, 400),
    ("POST", "/qos-specs", {"qos_specs": {"name": " padded "}}, 400),
    ("POST", "/qos-specs", {"qos_specs": {"name": "x", "consumer": "nobody"}}, 400),
    ("POST", "/qos-specs", {"qos_specs": {"name": "x", "iops": 5}}, 400),
    ("POST", "/qos-specs", {"qos_specs": {"name": "x", "k" * 256: "v"}}, 400),
    ("POST", "/qos-specs", {"qos_specs": {"name": "x"}, "extra": 1}, 400),
    ("POST", "/qos-specs", {"qos_specs": "x"}, 400),
    ("PUT", "/qos-specs/{qos}", {"qos_specs": {"k": 1}}, 400),
    ("PUT", "/qos-specs/{qos}", {"qos": {}}, 400),
    ("PUT", "/qos-specs/{qos}/delete_keys", {"keys": "k"}, 400),
    ("PUT", "/qos-specs/{qos}/delete_keys", {"keys": ["a", "a"]}, 400),
    ("PUT", "/qos-specs/{qos}/delete_keys", {"keys": ["absent"]}, 404),
    ("PUT", "/qos-specs/{qos}/delete_keys", {}, 400),
    ("GET", "/qos-specs/{qos}/associate", None, 400),
    ("GET", "/qos-specs/{qos}/associate?vol_type_id={unknown}", None, 404),
    ("GET", "/qos-specs/{unknown}/associate?vol_type_id={unknown}", None, 404),
    ("GET", "/qos-specs/{unknown}", None, 404),
    ("DELETE", "/qos-specs/{unknown}", None, 404),
    ("GET", "/qos-specs/{unknown}/associations", None, 404),
    ("GET", "/qos-specs/{unknown}/disassociate_all", None, 404),
])
def test_bad_qos_requests_change_nothing(agent, cinder, method, path, body, code):
    q = cinder.qos_specs.create(f"bad-{uuid.uuid4().hex[:8]}", {"consumer": "front-end", "a": "1"})
    path = path.format(qos=q.id, unknown=uuid.uuid4())
    r = agent.request(method, path, body)
    assert r.status_code == code, r.text
    assert cinder.qos_specs.get(q.id).specs == {"a": "1"}
    r = agent.request("POST", "/qos-specs", {"qos_specs": {"name": q.name}})
    assert r.status_code == 409, "names are unique"
    cinder.qos_specs.delete(q)
