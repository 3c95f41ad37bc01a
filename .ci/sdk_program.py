"""A small program on Zoho's official Python SDK (PyPI zohocrmsdk8-0), run by .ci/sdk-check.

Unmodified SDK code paths; only the two things a drop-in user changes are changed: the API base
URL (a `DataCenter.Environment` whose URL is the gateway) and the access token (the gateway
client key, as `OAuthToken(access_token=...)`). The SDK's token store and its field-metadata
files go to a fresh scratch directory per run, so every run makes the SDK's full set of HTTP
calls (its start-up `GET /users?type=CurrentUser` and `GET /org` included) and none is hidden
by the SDK's own files.

Usage: python sdk_program.py <gateway base URL> <client key> <scratch dir>

Prints one JSON object on stdout: what each call returned (status code and the names read),
or {"error": ...} with the SDK's exception when a call fails. The driver judges the answers.
"""

import datetime
import json
import os
import sys

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.fields import FieldsOperations, GetFieldsParam
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.modules import GetModulesHeader, ModulesOperations
from zohocrmsdk.src.com.zoho.crm.api.record import (GetRecordParam, GetRecordsParam, RecordOperations,
                                                    SearchRecordsParam)
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig


class CallFailed(Exception):
    pass


def choice_value(value):
    """An SDK `Choice`'s value, or the value itself (the SDK uses both)."""
    return value.get_value() if hasattr(value, "get_value") else value


def body(what, response, wrapper_getter):
    """The SDK object of a 2xx answer, or CallFailed with the SDK's APIException details."""
    if response is None:
        raise CallFailed(f"{what}: no response")
    obj = response.get_object()
    if obj is None or not hasattr(obj, wrapper_getter):
        detail = {"status": response.get_status_code()}
        if obj is not None and hasattr(obj, "get_code"):
            detail.update(code=str(choice_value(obj.get_code())),
                          message=str(choice_value(obj.get_message())))
        raise CallFailed(f"{what}: {json.dumps(detail)}")
    return obj


def main():
    gateway, key, scratch = sys.argv[1:4]
    # The gateway answers everything under /crm; accounts and file-upload URLs are unused (an
    # access token needs no grant; no uploads here) and point at the gateway too, never at Zoho.
    environment = DataCenter.Environment(gateway, f"{gateway}/oauth/v2/token", gateway)
    Initializer.initialize(
        environment=environment,
        token=OAuthToken(access_token=key),
        store=FileStore(os.path.join(scratch, "sdk_tokens.csv")),
        sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False,
                             connect_timeout=5.0, read_timeout=30.0),
        resource_path=scratch,
        logger=Logger.get_instance(Logger.Levels.INFO, os.path.join(scratch, "sdk.log")),
    )
    out = {}

    # SDK start-up read: the modules.
    response = ModulesOperations().get_modules()
    modules = body("get_modules", response, "get_modules").get_modules()
    out["modules"] = [m.get_api_name() for m in modules]
    fetched = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

    # The SDK's periodic metadata check: modules again with If-Modified-Since = when it last
    # read them (a datetime, which the SDK sends in ISO-8601). Nothing changed since: 304 Not
    # Modified. (A fixed date would not do: where Zoho sends no Last-Modified the gateway's is
    # when it stored the answer, and a date in the future is invalid, RFC 9110 §13.1.3.)
    headers = HeaderMap()
    headers.add(GetModulesHeader.if_modified_since, fetched)
    response = ModulesOperations().get_modules(header_instance=headers)
    out["modules_if_modified_since"] = response.get_status_code() if response is not None else None

    # Fields of a module.
    params = ParameterMap()
    params.add(GetFieldsParam.module, "Leads")
    response = FieldsOperations().get_fields(params)
    out["fields"] = [f.get_api_name() for f in body("get_fields", response, "get_fields").get_fields()]

    # Records with fields (the SDK reads the module's fields first, for its type conversion).
    params = ParameterMap()
    params.add(GetRecordsParam.fields, "Last_Name,Email,Company")
    response = RecordOperations("Leads").get_records(params)
    records = body("get_records", response, "get_data").get_data()
    out["records"] = [[r.get_id(), r.get_key_value("Last_Name"), r.get_key_value("Company")]
                      for r in records]

    # One record by id, with fields.
    params = ParameterMap()
    params.add(GetRecordParam.fields, "Full_Name,Company")
    response = RecordOperations("Leads").get_record(3652397000000010003, params)
    record = body("get_record", response, "get_data").get_data()
    out["record"] = [[r.get_id(), r.get_key_value("Full_Name"), r.get_key_value("Company")]
                     for r in record]

    # Search with criteria: an `and` of two members, and a value with Zoho's escaped parentheses.
    for name, criteria in (("search", "((Last_Name:equals:Smith)and(Company:equals:ABC))"),
                           ("search_escaped", r"(Company:equals:Burns \(UK\) Ltd)")):
        params = ParameterMap()
        params.add(SearchRecordsParam.criteria, criteria)
        response = RecordOperations("Leads").search_records(params)
        found = body(name, response, "get_data").get_data()
        out[name] = [[r.get_id(), r.get_key_value("Full_Name")] for r in found]

    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except CallFailed as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
    except Exception as e:  # an SDKException or a bug: report it as data, with its type
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
