#!/usr/bin/env python3
"""A stand-in for PaperCut's Web Services API (XML-RPC), written with
Python's standard xmlrpc.server, for tests/papercut.rs.

    papercut_server.py TOKEN USERS_JSON CONTROL_DIR

USERS_JSON: {"username": {"full-name": ..., "email": ..., ...}, ...}.
Semantics as PaperCut documents them: the first argument of every call is
the auth token; a wrong one is a fault, and so is an unknown user or
shared account. The shared accounts are CONTROL_DIR/shared.json if
present ({"account": {"account-id": ..., "notes": ...}}), else two.
CONTROL_DIR/mode (read at every request) switches the server: "normal",
"slow N" (sleep N seconds before answering) or "down" (the connection is
closed without an answer, as when PaperCut's service is stopped behind a
proxy). Every call is counted in CONTROL_DIR/calls.json ({"method name":
n}; a request refused while down counts as "down"; "max_in_flight": the
most requests answered at once). Prints the port it
listens on (loopback, chosen by the system), then serves until killed.
"""
import json
import os
import sys
import threading
import time
from socketserver import ThreadingMixIn
from xmlrpc.client import Fault
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

TOKEN, USERS_FILE, CONTROL = sys.argv[1], sys.argv[2], sys.argv[3]
with open(USERS_FILE) as f:
    USERS = json.load(f)
try:
    with open(os.path.join(CONTROL, "shared.json")) as f:
        SHARED = json.load(f)
except FileNotFoundError:
    SHARED = {
        "Acme Design": {"account-id": "1001", "notes": "cus_acme_pc", "balance": "0.0"},
        "Koala Labs": {"account-id": "1002", "notes": "", "balance": "12.5"},
    }
LOCK = threading.Lock()
CALLS = {}
# Requests being answered now; the most at once is CALLS["max_in_flight"].
IN_FLIGHT = 0


class Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


class Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/rpc/api/xmlrpc",)

    def log_message(self, *args):
        pass

    def do_POST(self):
        if mode()[:1] == ["down"]:
            count("down", "")
            # Read nothing, answer nothing: the client sees the connection
            # closed (a network failure, not a fault).
            self.close_connection = True
            return
        global IN_FLIGHT
        with LOCK:
            IN_FLIGHT += 1
            if IN_FLIGHT > CALLS.get("max_in_flight", 0):
                CALLS["max_in_flight"] = IN_FLIGHT
        try:
            super().do_POST()
        finally:
            with LOCK:
                IN_FLIGHT -= 1


def count(method, name):
    with LOCK:
        key = method + " " + name
        CALLS[key] = CALLS.get(key, 0) + 1
        tmp = os.path.join(CONTROL, "calls.json.tmp")
        with open(tmp, "w") as f:
            json.dump(CALLS, f)
        os.replace(tmp, os.path.join(CONTROL, "calls.json"))


def mode():
    try:
        with open(os.path.join(CONTROL, "mode")) as f:
            return f.read().split()
    except FileNotFoundError:
        return ["normal"]


def behave(token):
    mode_now = mode()
    if mode_now[:1] == ["slow"]:
        time.sleep(float(mode_now[1]))
    if token != TOKEN:
        # What PaperCut answers to a wrong auth token.
        raise Fault(1, "Invalid authentication token")


def get_user_properties(token, user, props):
    count("api.getUserProperties", user)
    behave(token)
    if user not in USERS:
        raise Fault(1, "User does not exist: %s" % user)
    return [str(USERS[user].get(p, "")) for p in props]


def get_shared_account_properties(token, account, props):
    count("api.getSharedAccountProperties", account)
    behave(token)
    if account not in SHARED:
        raise Fault(1, "Shared account does not exist: %s" % account)
    return [str(SHARED[account].get(p, "")) for p in props]


def is_user_exists(token, user):
    count("api.isUserExists", user)
    behave(token)
    return user in USERS


server = Server(("127.0.0.1", 0), requestHandler=Handler, logRequests=False, allow_none=False)
server.register_function(get_user_properties, "api.getUserProperties")
server.register_function(get_shared_account_properties, "api.getSharedAccountProperties")
server.register_function(is_user_exists, "api.isUserExists")
print(server.server_address[1], flush=True)
server.serve_forever()
