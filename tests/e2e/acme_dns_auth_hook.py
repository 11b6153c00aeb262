#!/usr/bin/env python3
"""A certbot `--manual-auth-hook` for acme-dns, as certbot users run one (joohoi's
acme-dns-certbot `acme-dns-auth.py`): python-requests against the acme-dns API, one account per
domain kept in a JSON storage file. The first time a domain is seen it registers (POST /register,
status exactly 201), stores the answer whole and prints the CNAME the domain owner must add;
every time it sends the validation (POST /update, status exactly 200).

Run by certbot with Debian's python3 (requests comes with certbot), so it uses nothing from this
repository. Settings, as the original's constants: ACMEDNS_URL, STORAGE_PATH; certbot passes
CERTBOT_DOMAIN and CERTBOT_VALIDATION. requests verifies HTTPS against REQUESTS_CA_BUNDLE.
"""

import json
import os
import sys

import requests

ACMEDNS_URL = os.environ["ACMEDNS_URL"]
STORAGE_PATH = os.environ["STORAGE_PATH"]
DOMAIN = os.environ["CERTBOT_DOMAIN"]
VALIDATION_TOKEN = os.environ["CERTBOT_VALIDATION"]


def register_account():
    res = requests.post(ACMEDNS_URL + "/register", timeout=10)
    if res.status_code != 201:
        print("Encountered an error while trying to register a new acme-dns account.")
        print(f"HTTP status {res.status_code}, body {res.text}")
        sys.exit(1)
    return json.loads(res.text)


def update_txt_record(account, txt):
    update = {"subdomain": account["subdomain"], "txt": txt}
    headers = {
        "X-Api-User": account["username"],
        "X-Api-Key": account["password"],
        "Content-Type": "application/json",
    }
    res = requests.post(
        ACMEDNS_URL + "/update", headers=headers, data=json.dumps(update, indent=4), timeout=10
    )
    if res.status_code != 200:
        print("Encountered an error while trying to update TXT record in acme-dns.")
        print(f"HTTP status {res.status_code}, body {res.json()}")
        sys.exit(1)


def load_storage():
    if not os.path.isfile(STORAGE_PATH):
        return {}
    with open(STORAGE_PATH) as fh:
        return json.load(fh)


def save_storage(data):
    fd = os.open(STORAGE_PATH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


if __name__ == "__main__":
    storage = load_storage()
    account = storage.get(DOMAIN)
    if not account:
        account = register_account()
        storage[DOMAIN] = account
        save_storage(storage)
        print("Please add the following CNAME record to your main DNS zone:")
        print("_acme-challenge.{} CNAME {}.".format(DOMAIN, account["fulldomain"]))
    update_txt_record(account, VALIDATION_TOKEN)
