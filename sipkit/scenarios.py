"""SIPp scenarios for the kit's two roles: a citizen's phone (UAC) and an agent's phone (UAS).

Every step worth timing writes a log line `KIT <call_number> <event> <sec> <usec> <detail>`
(SIPp's <log> action) that the kit parses into per-call results.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

# SIP final responses a caller may get instead of 200; each ends the call as rejected.
REJECT_CODES = (401, 403, 404, 408, 410, 480, 484, 486, 487, 488, 500, 502, 503, 504, 600, 603)


# 200 OK to the request just received (a BYE, a CANCEL), echoing its dialog headers.
OK_TO_LAST_REQUEST = """<send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>"""


def _log(event: str, detail: str = "-") -> str:
    return ('<action><gettimeofday assign_to="t_s,t_us"/>'
            f'<log message="KIT [call_number] {event} [$t_s] [$t_us] {detail}"/></action>')


def _sdp(owner: str, version: int, direction: str = "sendrecv", ptime: bool = False) -> str:
    """The kit's one audio offer/answer: PCMA, PCMU and RFC 4733 events."""
    return "\n".join((
        "v=0", f"o={owner} 1 {version} IN IP[local_ip_type] [local_ip]", "s=-",
        "c=IN IP[media_ip_type] [media_ip]", "t=0 0",
        "m=audio [media_port] RTP/AVP 8 0 101", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16",
        *(["a=ptime:20"] if ptime else []), f"a={direction}"))


def caller(pcap: str | None, hangup_ms: int | None, max_ms: int) -> str:
    """A citizen dialling [service] from caller ID [field0] (display name [field1]).

    After the answer the caller plays `pcap` (its whole RTP stream) and hangs up after
    `hangup_ms`, unless the far end hangs up first; with no hangup_ms it waits up to
    `max_ms` for the far end.
    """
    play = (f'<nop><action><exec play_pcap_audio={quoteattr(pcap)}/></action></nop>'
            if pcap else "")
    wait_ms = hangup_ms if hangup_ms is not None else max_ms
    hangup_event = "caller_hangup" if hangup_ms is not None else "wait_timeout"
    rejects = "\n".join(
        f'  <recv response="{code}" optional="true" next="rejected">'
        f'{_log("rejected", str(code))}</recv>'
        for code in REJECT_CODES
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline-kit-caller">
  <nop>{_log("invite", "[field0]")}</nop>
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "[field1]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]KIT[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: hotline-sipkit
Content-Type: application/sdp
Content-Length: [len]

{_sdp("kit", 1, ptime=True)}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true">{_log("ringing")}</recv>
  <recv response="183" optional="true">{_log("ringing")}</recv>
{rejects}
  <recv response="200" rtd="true" rrs="true">{_log("answered")}</recv>
  <send>
    <![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "[field1]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]KIT[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  {play}
  <recv request="BYE" timeout="{wait_ms}" ontimeout="hangup">{_log("far_end_hangup")}</recv>
  {OK_TO_LAST_REQUEST}
  <nop next="done"/>
  <label id="hangup"/>
  <nop>{_log(hangup_event)}</nop>
  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "[field1]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]KIT[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <nop next="done"/>
  <label id="rejected"/>
  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: "[field1]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]KIT[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
  <nop>{_log("ended")}</nop>
</scenario>
"""


def _in_dialog(method: str, cseq: int, extra: str = "", sdp_direction: str = "") -> str:
    """A request the answering phone sends inside the call (re-INVITE, REFER), with its own
    CSeq numbers (10, 11 ...), below the BYE's."""
    body = ""
    headers = extra
    if sdp_direction:
        headers += "Content-Type: application/sdp\n"
        body = "\n" + _sdp("agent", cseq, sdp_direction)
    return f"""<send retrans="500">
    <![CDATA[
{method} [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:agent@[local_ip]:[local_port]>;tag=[pid]AGT[call_number]
To: [$remote_from]
[last_Call-ID:]
CSeq: {cseq} {method}
Contact: <sip:agent@[local_ip]:[local_port]>
Max-Forwards: 70
{headers}Content-Length: [len]
{body}
    ]]>
  </send>"""


def _ack(cseq: int) -> str:
    return f"""<send>
    <![CDATA[
ACK [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:agent@[local_ip]:[local_port]>;tag=[pid]AGT[call_number]
To: [$remote_from]
[last_Call-ID:]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>"""


def _hold(after_ms: int, hold_ms: int) -> str:
    """Put the far end on hold (a=sendonly) after `after_ms`, take it back after `hold_ms`."""
    steps = [f'<pause milliseconds="{max(after_ms, 1)}"/>']
    for cseq, direction, event in ((10, "sendonly", "hold"), (11, "sendrecv", "unhold")):
        if cseq == 11:
            steps.append(f'<pause milliseconds="{max(hold_ms, 1)}"/>')
        steps += [_in_dialog("INVITE", cseq, sdp_direction=direction),
                  '<recv response="100" optional="true"/>',
                  f'<recv response="200">{_log(event)}</recv>', _ack(cseq)]
    return "\n  ".join(steps)


def _refer(after_ms: int, target: str) -> str:
    """Blind transfer (REFER) of the far end to `target`; Asterisk's NOTIFYs are answered
    until it hangs this phone up."""
    refer_to = (f"Refer-To: <sip:{target}@[$remote_hostport]>\n"
                "Referred-By: <sip:agent@[local_ip]:[local_port]>\n")
    return f"""<pause milliseconds="{max(after_ms, 1)}"/>
  {_in_dialog("REFER", 12, refer_to)}
  <recv response="202">{_log("transferred", target)}</recv>
  <label id="refer_wait"/>
  <recv request="NOTIFY" optional="true" next="notify_ok"/>
  <recv request="BYE" next="refer_bye">{_log("far_end_hangup")}</recv>
  <label id="notify_ok"/>
  {OK_TO_LAST_REQUEST}
  <nop next="refer_wait"/>
  <label id="refer_bye"/>
  {OK_TO_LAST_REQUEST}
  <nop next="done"/>"""


def agent_phone(behaviour: str, answer_after_ms: int, talk_ms: int | None,
                refuse_code: int, pcap: str | None = None,
                hold: tuple[int, int] | None = None,
                transfer: tuple[int, str] | None = None) -> str:
    """An agent's desk phone (or a citizen's phone the hotline calls). behaviour: 'answer'
    (after a delay, then talk for talk_ms or until the far end hangs up), 'refuse' (final
    `refuse_code`), or 'never' (rings until cancelled). Once answered it plays `pcap` (e.g.
    the digits a citizen keys); without one, audio is echoed (-rtp_echo) so recordings hold
    both directions.
    """
    play = (f'<nop><action><exec play_pcap_audio={quoteattr(pcap)}/></action></nop>'
            if pcap else "")
    if hold:  # `hold` = (ms after the answer, ms on hold)
        play += "\n  " + _hold(*hold)
    transfer_host = ""  # SIPp refuses a variable that is set but never used
    if transfer:  # `transfer` = (ms after the answer or the hold, target number)
        play += "\n  " + _refer(*transfer)
        transfer_host = ('<ereg regexp="sip:[^@>;]*@([^>;]*)" search_in="hdr" '
                         'header="Contact:" assign_to="junk,remote_hostport"/>')
    if behaviour not in ("answer", "refuse", "never"):
        raise ValueError(f"unknown agent behaviour {behaviour!r}")
    to_tagged = "[last_To:];tag=[pid]AGT[call_number]"
    reply_headers = f"[last_Via:]\n[last_From:]\n{to_tagged}\n[last_Call-ID:]\n[last_CSeq:]"
    if behaviour == "answer":
        after_ring = (f'<recv request="CANCEL" timeout="{max(answer_after_ms, 1)}" '
                      f'ontimeout="answer">{_log("cancelled")}</recv>\n  <nop next="cancel"/>')
    elif behaviour == "never":
        after_ring = f'<recv request="CANCEL">{_log("cancelled")}</recv>\n  <nop next="cancel"/>'
    else:
        after_ring = f"""<send>
    <![CDATA[
SIP/2.0 {refuse_code} Refused By Kit
{reply_headers}
Content-Length: 0

    ]]>
  </send>
  <recv request="ACK">{_log("refused", str(refuse_code))}</recv>
  <nop next="done"/>"""
    talk_wait = f' timeout="{talk_ms}" ontimeout="hangup"' if talk_ms is not None else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline-kit-agent">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="CSeq: *([0-9]+)" search_in="msg" assign_to="junk,invite_cseq"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>
      <ereg regexp="sip:([^@;>]*)@" search_in="hdr" header="From:" assign_to="junk,from_user"/>
      <ereg regexp="INVITE sip:([^@;>]*)@" search_in="msg" assign_to="junk,to_user"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>
      {transfer_host}
      <gettimeofday assign_to="t_s,t_us"/>
      <log message="KIT [call_number] offered [$t_s] [$t_us] [$from_user] [$to_user]"/>
    </action>
  </recv>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
{reply_headers}
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Length: 0

    ]]>
  </send>
  {after_ring}
  <label id="answer"/>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
{reply_headers}
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{_sdp("agent", 1)}
    ]]>
  </send>
  <recv request="ACK">{_log("answered")}</recv>
  {play}
  <recv request="BYE"{talk_wait}>{_log("far_end_hangup")}</recv>
  {OK_TO_LAST_REQUEST}
  <nop next="done"/>
  <label id="hangup"/>
  <nop>{_log("agent_hangup")}</nop>
  <send retrans="500">
    <![CDATA[
BYE [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:agent@[local_ip]:[local_port]>;tag=[pid]AGT[call_number]
To: [$remote_from]
[last_Call-ID:]
CSeq: 20 BYE
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <nop next="done"/>
  <label id="cancel"/>
  {OK_TO_LAST_REQUEST}
  <send>
    <![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
{to_tagged}
[last_Call-ID:]
CSeq: [$invite_cseq] INVITE
Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <label id="done"/>
  <nop>{_log("ended")}</nop>
</scenario>
"""


def registration(user: str, expires: int) -> str:
    """A phone registering as `user`, answering the digest challenge with the password
    given to SIPp (-au/-ap). Logs `registered`, `denied` (a second 401: wrong password) or
    `forbidden` (403: refused outright, e.g. a banned address) with the status."""
    ends = ('  <recv response="403" optional="true" next="forbidden"/>\n'
            '  <recv response="401" optional="true" next="denied"/>\n'
            '  <recv response="200" next="registered"/>')
    request = f"""REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@[remote_ip]:[remote_port]>;tag=[pid]KIT[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
Contact: <sip:{user}@[local_ip]:[local_port]>
Expires: {expires}
Max-Forwards: 70
User-Agent: hotline-sipkit"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline-kit-register">
  <nop>{_log("register", user)}</nop>
  <send retrans="500">
    <![CDATA[
{request}
CSeq: 1 REGISTER
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true" optional="true" next="challenged"/>
  <recv response="403" optional="true" next="forbidden"/>
  <recv response="200" next="registered"/>
  <label id="challenged"/>
  <send retrans="500">
    <![CDATA[
{request}
CSeq: 2 REGISTER
[authentication]
Content-Length: 0

    ]]>
  </send>
{ends}
  <label id="forbidden"/>
  <nop>{_log("forbidden", "403")}</nop>
  <nop next="end"/>
  <label id="denied"/>
  <nop>{_log("denied", "401")}</nop>
  <nop next="end"/>
  <label id="registered"/>
  <nop>{_log("registered", "200")}</nop>
  <label id="end"/>
</scenario>
"""
