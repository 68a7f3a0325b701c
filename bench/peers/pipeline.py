"""wechatpy: time decrypt_message + parse_message per push, on bench/run.py's cases."""
import json
import sys
import time

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto

cases = json.load(open(sys.argv[1]))
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.5
out = []
for c in cases:
    crypto = WeChatCrypto(c["token"], c["key"], c["appid"])

    def one():
        xml = crypto.decrypt_message(c["body"], c["msg_signature"], c["timestamp"], c["nonce"])
        return parse_message(xml)

    assert one().type == "text"
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            one()
        n += 50
    out.append({"size": c["size"], "ns_per_msg": (time.perf_counter() - start) / n * 1e9})
print(json.dumps(out))
