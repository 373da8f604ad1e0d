"""The sans-IO milter protocol (regfd/mta/protocol.py) on hand-built packets: framing, bounds, encoders."""

from __future__ import annotations

import struct

import pytest

from regfd.mta import protocol as p


def raw(cmd: bytes, data: bytes = b"") -> bytes:
    """A packet built by hand, independently of protocol.packet."""
    return struct.pack(">I", len(data) + 1) + cmd + data


def test_parses_whole_packets_and_keeps_a_partial_one() -> None:
    parser = p.PacketParser()
    stream = raw(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)) + raw(b"D", b"Mi\0ABC\0") + raw(b"M", b"<a@b>\0")
    got = parser.packets(stream[:-3])
    assert [x.cmd for x in got] == [b"O", b"D"]
    assert parser.buffered == len(raw(b"M", b"<a@b>\0")) - 3
    assert parser.packets(stream[-3:]) == [p.Packet(b"M", b"<a@b>\0")]
    assert parser.buffered == 0


def test_byte_by_byte_input_gives_the_same_packets() -> None:
    stream = raw(b"T") + raw(b"L", b"Subject\0Hi\0") + raw(b"N") + raw(b"B", b"x" * 300) + raw(b"E")
    parser = p.PacketParser()
    got = [pkt for i in range(len(stream)) for pkt in parser.packets(stream[i:i + 1])]
    assert got == p.PacketParser().packets(stream)
    assert [x.cmd for x in got] == [b"T", b"L", b"N", b"B", b"E"]


@pytest.mark.parametrize("length", [2**31, 2**32 - 1, 1024 * 1024])
def test_hostile_length_field_is_an_error_before_its_data(length: int) -> None:
    parser = p.PacketParser(max_packet=65536)
    parser.feed(struct.pack(">I", length) + b"B" + b"x" * 10)
    with pytest.raises(p.ProtocolError, match="over the limit"):
        parser.next()
    assert parser.buffered < 100  # nothing of the announced size was awaited or kept


def test_zero_length_is_an_error() -> None:
    parser = p.PacketParser()
    parser.feed(b"\0\0\0\0")
    with pytest.raises(p.ProtocolError):
        parser.next()


def test_truncated_packet_waits_and_never_yields_garbage() -> None:
    parser = p.PacketParser()
    assert parser.packets(raw(b"L", b"Subject\0Hi\0")[:-1]) == []
    assert parser.packets(b"\0") == [p.Packet(b"L", b"Subject\0Hi\0")]


def test_decoders_refuse_truncated_data() -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_optneg(b"\0\0\0\6")
    with pytest.raises(p.ProtocolError):
        p.decode_header(b"Subject\0Hi")  # no final NUL
    with pytest.raises(p.ProtocolError):
        p.decode_header(b"Subject\0")
    with pytest.raises(p.ProtocolError):
        p.decode_connect(b"host")
    with pytest.raises(p.ProtocolError):
        p.decode_macros(b"")


def test_decodes_connect_for_each_family() -> None:
    assert p.decode_connect(b"client\x004\x10\x92192.0.2.7\0") == ("client", "192.0.2.7")
    assert p.decode_connect(b"client\x006\x10\x922001:db8::1\0") == ("client", "2001:db8::1")
    assert p.decode_connect(b"local\0L\0\0/run/x.sock\0") == ("local", "/run/x.sock")
    assert p.decode_connect(b"unknown\0U") == ("unknown", "")


def test_macro_names_with_and_without_braces_are_one() -> None:
    stage, macros = p.decode_macros(b"M{i}\x00Q1\x00{auth_authen}\x00ceo\x00j\x00mx\x00")
    assert stage == b"M" and macros == {"i": "Q1", "{auth_authen}": "ceo", "j": "mx"}


def test_encoders_match_hand_built_packets() -> None:
    assert p.CONTINUE_PKT == b"\0\0\0\1c" and p.ACCEPT_PKT == b"\0\0\0\1a"
    assert p.TEMPFAIL_PKT == b"\0\0\0\1t" and p.REJECT_PKT == b"\0\0\0\1r"
    assert p.addheader("X-RegFD-Action", "tag") == raw(b"h", b"X-RegFD-Action\0tag\0")
    assert p.chgheader("Subject", 1, "[RegFD] Hi") == raw(b"m", b"\0\0\0\1Subject\0[RegFD] Hi\0")
    assert p.addrcpt("<j@allient.com>") == raw(b"+", b"<j@allient.com>\0")
    assert p.quarantine("regfd hold: x") == raw(b"q", b"regfd hold: x\0")
    assert p.replycode("550", "5.7.1", "Refused") == raw(b"y", b"550 5.7.1 Refused\0")


def test_option_negotiation_reply_carries_the_macro_lists() -> None:
    got = p.optneg(6, p.F_ADDHDRS | p.F_SETSYMLIST, p.P_NOUNKNOWN | p.P_SKIP,
                   {p.M_ENVFROM: ("i", "{auth_authen}"), p.M_EOM: ("i", "j")})
    body = struct.pack(">III", 6, 0x101, 0x500) + b"\0\0\0\2i {auth_authen}\0" + b"\0\0\0\5i j\0"
    assert got == raw(b"O", body)
    assert p.PacketParser().packets(got) == [p.Packet(b"O", body)]
