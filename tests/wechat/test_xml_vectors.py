"""Safe XML parsing/building checked against the official event samples and pay ack vectors."""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import ParseError

import pytest
from defusedxml.ElementTree import fromstring as defused_fromstring

from tests.wechat.vectordata import load
from wechat.errors import WeChatXMLError
from wechat.xmlutil import parse_xml, parse_xml_list, to_xml

EVENTS = load("events.json")["events"]


@pytest.mark.parametrize("event", [pytest.param(e, id=e["id"]) for e in EVENTS])
def test_parse_event_xml(event: dict[str, Any]) -> None:
    fields = parse_xml(event["xml"])
    assert fields["MsgType"] == "event"
    assert fields["Event"] == event["event"]
    assert fields["ToUserName"] and fields["ToUserName"] == fields["ToUserName"].strip()
    for key, value in event.get("expected_fields", {}).items():
        assert fields[key] == value


def test_parse_xml_strips_cdata_padding_and_keeps_empty_values() -> None:
    fields = parse_xml(next(e for e in EVENTS if e["id"] == "user_get_card")["xml"])
    assert fields["ToUserName"] == "gh_fc0a06a20993"
    assert fields["CardId"] == "pZI8Fjwsy5fVPRBeD78J4RmqVvBc"
    assert fields["FriendUserName"] == ""
    assert fields["OldUserCardCode"] == ""


def test_parse_xml_compatible_mode_keeps_plain_fields_and_encrypt() -> None:
    xml = next(e for e in EVENTS if e["id"] == "templatesendjobfinish_compat_mode_real_world")["xml"]
    fields = parse_xml(xml)
    assert fields["MsgID"] == "3487542469355618313"
    assert fields["Encrypt"].startswith("MOEJkz1VYnBN6Kh9")


@pytest.mark.parametrize(
    ("event_id", "container", "expected"),
    [
        (
            "subscribe_msg_popup_event",
            "SubscribeMsgPopupEvent",
            [
                ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "accept"),
                ("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "reject"),
            ],
        ),
        (
            "subscribe_msg_change_event",
            "SubscribeMsgChangeEvent",
            [("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "reject")],
        ),
    ],
)
def test_parse_xml_list(event_id: str, container: str, expected: list[tuple[str, str]]) -> None:
    xml = next(e for e in EVENTS if e["id"] == event_id)["xml"]
    assert container not in parse_xml(xml)  # nested elements stay out of the flat dict
    items = parse_xml_list(xml, container)
    assert [(i["TemplateId"], i["SubscribeStatusString"]) for i in items] == expected
    assert parse_xml_list(xml, "Missing") == []


def test_parse_xml_list_sent_event() -> None:
    xml = next(e for e in EVENTS if e["id"] == "subscribe_msg_sent_event")["xml"]
    assert parse_xml_list(xml, "SubscribeMsgSentEvent") == [
        {
            "TemplateId": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
            "MsgID": "1700827132819554304",
            "ErrorCode": "0",
            "ErrorStatus": "success",
        }
    ]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            "<xml><Content>&xxe;</Content></xml>",
            id="xxe-external-entity",
        ),
        pytest.param(
            '<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            "<xml><Content>&b;</Content></xml>",
            id="entity-expansion",
        ),
        pytest.param('<!DOCTYPE xml SYSTEM "http://127.0.0.1/x.dtd"><xml/>', id="external-dtd"),
        pytest.param("<!DOCTYPE xml><xml><a>1</a></xml>", id="bare-dtd"),
        pytest.param("<xml><a>1</a>", id="unclosed"),
        pytest.param("not xml", id="text"),
        pytest.param("", id="empty"),
        pytest.param(b"   ", id="blank-bytes"),
        pytest.param("<xml><sign>A</sign><sign>B</sign></xml>", id="duplicate-tag"),
    ],
)
def test_parse_xml_rejects(payload: str | bytes) -> None:
    with pytest.raises(WeChatXMLError):
        parse_xml(payload)
    assert issubclass(WeChatXMLError, ValueError)


def test_parse_xml_bytes_with_declaration() -> None:
    data = '<?xml version="1.0" encoding="UTF-8"?><xml><attach>支付测试</attach><total_fee>1</total_fee></xml>'
    assert parse_xml(data.encode()) == {"attach": "支付测试", "total_fee": "1"}


def test_to_xml_matches_pay_notify_ack_vector() -> None:
    ack = next(i for i in load("notify-protocol.json")["items"] if i["id"] == "pay_v2_notify_ack")
    assert to_xml({"return_code": "SUCCESS", "return_msg": "OK"}) == ack["success_response_xml"]
    assert to_xml({"return_code": "FAIL", "return_msg": "500"}) == ack["fail_response_xml"]


def test_to_xml_values() -> None:
    assert to_xml({"total_fee": 1, "body": "会员充值"}) == (
        "<xml><total_fee>1</total_fee><body><![CDATA[会员充值]]></body></xml>"
    )
    assert to_xml({"MsgType": "image", "Image": {"MediaId": "m1"}}) == (
        "<xml><MsgType><![CDATA[image]]></MsgType><Image><MediaId><![CDATA[m1]]></MediaId></Image></xml>"
    )
    tricky = "a]]><b>&</b>]]>"
    assert parse_xml(to_xml({"Content": tricky})) == {"Content": tricky}
    assert to_xml({"item": [{"Title": "t1"}, {"Title": "t2"}]}, root="Articles") == (
        "<Articles><item><Title><![CDATA[t1]]></Title></item><item><Title><![CDATA[t2]]></Title></item></Articles>"
    )
    with pytest.raises(ValueError):
        to_xml({"bad tag": "x"})
    with pytest.raises(ValueError):
        to_xml({"a": "nul\x00"})
    with pytest.raises(TypeError):
        to_xml({"flag": True})
    with pytest.raises(TypeError):
        to_xml({"amount": 1.5})


def _defused_fields(data: bytes | str) -> dict[str, str] | str:
    """What defusedxml (forbid DTDs, entities, external) makes of a document: leaf fields, or "error"."""
    try:
        root = defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, ValueError):
        return "error"
    fields: dict[str, str] = {}
    for child in root:
        if len(child):
            continue
        if child.tag in fields:
            return "error"
        fields[child.tag] = (child.text or "").strip()
    return fields


def _our_fields(data: bytes | str) -> dict[str, str] | str:
    try:
        return parse_xml(data)
    except WeChatXMLError:
        return "error"


HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
    b'<!DOCTYPE xml [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><xml><return_code>&b;</return_code></xml>',
    b'<!DOCTYPE xml SYSTEM "http://example.com/x.dtd"><xml><a>1</a></xml>',
    b"<xml><a>&undefined;</a></xml>",
    b"<xml><a>1</a><a>2</a></xml>",
    b"<xml><a>1</a>",
    b"<a:b><c>1</c></a:b>",
    b'<x:xml xmlns:x="urn:x"><x:a>1</x:a><b> 2 <i>3</i> tail </b></x:xml>',
    b"<xml><a>x &amp; y &#20013;</a><b/><c><![CDATA[ ]]]]><![CDATA[> ]]></c></xml>",
    b"\xef\xbb\xbf<xml><a>bom</a></xml>",
    '<?xml version="1.0" encoding="GBK"?><xml><a>中</a></xml>'.encode("gbk"),
    "<xml><a>中文</a></xml>",
    b"<xml>text<a>1</a>more<b>2</b></xml>",
    b"<xml></xml><xml></xml>",
]


@pytest.mark.parametrize("data", [*HOSTILE, *(e["xml"] for e in EVENTS)])
def test_parse_xml_agrees_with_defusedxml(data: bytes | str) -> None:
    assert _our_fields(data) == _defused_fields(data)
