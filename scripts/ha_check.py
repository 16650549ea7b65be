"""The Home Assistant side of scripts/ha-check.sh, run with the Python of the HA venv.

Each subcommand does one thing against a running Home Assistant on 127.0.0.1 and exits 0
when what it expects is seen, 1 (with what it saw) when not. Only the standard library:
HA's REST API (onboarding, auth, config-entry flows, states, services, templates,
logbook). The token lives in $HA_CONFIG/.check-token.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

BASE = "http://127.0.0.1:%s" % os.environ["HA_PORT"]
CONFIG = os.environ["HA_CONFIG"]
TOKEN_FILE = os.path.join(CONFIG, ".check-token")
CLIENT_ID = BASE + "/"


def request(method, path, body=None, token=None, form=False):
    """(status, parsed body or text)."""
    data = None
    headers = {}
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(BASE + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def token():
    with open(TOKEN_FILE) as f:
        return f.read().strip()


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def wait_up(limit=600):
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            status, _ = request("GET", "/api/onboarding")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    fail("Home Assistant did not answer within %d s" % limit)


def setup(mqtt_port):
    """Onboard a user, get a token, add the MQTT integration through its config flow."""
    wait_up()
    status, body = request(
        "POST",
        "/api/onboarding/users",
        {
            "client_id": CLIENT_ID,
            "name": "Check",
            "username": "check",
            "password": "lockerd-check-password",
            "language": "en",
        },
    )
    if status != 200:
        fail("onboarding: %s %s" % (status, body))
    status, tok = request(
        "POST",
        "/auth/token",
        {"grant_type": "authorization_code", "code": body["auth_code"], "client_id": CLIENT_ID},
        form=True,
    )
    if status != 200:
        fail("token: %s %s" % (status, tok))
    with open(TOKEN_FILE, "w") as f:
        f.write(tok["access_token"])
    t = tok["access_token"]
    status, flow = request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"}, t)
    for _ in range(6):
        if status != 200:
            fail("mqtt flow: %s %s" % (status, flow))
        if flow.get("type") == "create_entry":
            print("ok: MQTT integration added (broker 127.0.0.1:%s)" % mqtt_port)
            return
        if flow.get("type") == "menu":
            step = "broker" if "broker" in flow.get("menu_options", []) else flow["menu_options"][0]
            status, flow = request(
                "POST", "/api/config/config_entries/flow/" + flow["flow_id"], {"next_step_id": step}, t
            )
            continue
        if flow.get("type") != "form":
            fail("mqtt flow: %s" % flow)
        fields = {f["name"] for f in flow.get("data_schema", [])}
        answer = {}
        if "broker" in fields:
            answer = {"broker": "127.0.0.1", "port": int(mqtt_port)}
        status, flow = request(
            "POST", "/api/config/config_entries/flow/" + flow["flow_id"], answer, t
        )
    fail("mqtt flow did not finish: %s" % flow)


def states():
    status, body = request("GET", "/api/states", token=token())
    if status != 200:
        fail("states: %s %s" % (status, body))
    return {s["entity_id"]: s for s in body}


def template(text):
    status, body = request("POST", "/api/template", {"template": text}, token())
    if status != 200:
        fail("template: %s %s" % (status, body))
    return body


def wait_for(what, test, limit):
    t0 = time.time()
    seen = None
    while time.time() - t0 < limit:
        ok, seen = test()
        if ok:
            print("ok: %s (%.1f s)" % (what, time.time() - t0))
            return seen
        time.sleep(0.2)
    fail("%s: not within %s s; saw %s" % (what, limit, seen))


def device(expect_entities, limit):
    """The lockerd device and its entities in HA's registries."""

    def test():
        ids = template(
            "{{ integration_entities('mqtt') | select('search', 'lockerd') | list | tojson }}"
        )
        ids = ids if not isinstance(ids, str) else json.loads(ids)
        dev = template(
            "{% set d = device_id('lock.lockerd_k1_lock') %}"
            "{{ {'id': d, 'name': device_attr(d, 'name') if d else none,"
            " 'entities': device_entities(d) if d else []} | tojson }}"
        )
        dev = dev if not isinstance(dev, str) else json.loads(dev)
        return len(dev["entities"]) == int(expect_entities), {"mqtt": ids, "device": dev}

    seen = wait_for("device with %s entities" % expect_entities, test, float(limit))
    print("   " + ", ".join(sorted(seen["device"]["entities"])))


def state(entity, expected, limit):
    """The entity's state is `expected`, or contains it when given as `~text`."""

    def test():
        s = states().get(entity)
        if s is None:
            return False, None
        if expected.startswith("~"):
            return expected[1:] in s["state"], s["state"]
        return s["state"] == expected, s["state"]

    wait_for("%s is %s" % (entity, expected), test, float(limit))


def gone(limit):
    """No lockerd device left in HA (discovery withdrawn)."""

    def test():
        d = str(template("{{ device_id('lock.lockerd_k1_lock') }}")).strip()
        return d in ("", "None"), d

    wait_for("the lockerd device is removed", test, float(limit))


def attr(entity, name, needle, limit):
    def test():
        s = states().get(entity)
        value = s and s["attributes"].get(name)
        return (value is not None and needle in str(value)), (s and s["attributes"])

    wait_for("%s.%s has %r" % (entity, name, needle), test, float(limit))


def call(service, entity, expect_status, code=None):
    domain, name = service.split(".")
    body = {"entity_id": entity}
    if code is not None:
        body["code"] = code
    status, reply = request("POST", "/api/services/%s/%s" % (domain, name), body, token())
    # "refused": HA itself refused the call (its REST API answers a ServiceValidationError
    # with 500; the log below says which).
    if expect_status == "refused" and status != 200:
        print("ok: %s %s code=%r refused by HA (HTTP %s)" % (service, entity, code, status))
        return
    if str(status) != expect_status:
        fail("%s %s code=%r: HTTP %s, expected %s: %s" % (service, entity, code, status, expect_status, reply))
    print("ok: %s %s%s -> HTTP %s" % (service, entity, "" if code is None else " (with a code)", status))


def logbook(entity, needle, limit):
    start = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))

    def test():
        status, body = request(
            "GET", "/api/logbook/%s?entity=%s" % (start, entity), token=token()
        )
        if status != 200:
            return False, (status, body)
        texts = [json.dumps(e) for e in body]
        return any(needle in t for t in texts), texts[-5:]

    wait_for("logbook of %s shows %r" % (entity, needle), test, float(limit))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "setup": setup,
        "device": device,
        "state": state,
        "attr": attr,
        "call": call,
        "logbook": logbook,
        "gone": gone,
    }[cmd](*args)


if __name__ == "__main__":
    main()
