"""A minimal aiohttp + wechatpy push endpoint: verify, decrypt, parse, answer success. Stores nothing."""
import sys

from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto

port, token, key, appid = sys.argv[1:5]
crypto = WeChatCrypto(token, key, appid)


async def receive(request):
    q = request.query
    xml = crypto.decrypt_message(await request.text(), q["msg_signature"], q["timestamp"], q["nonce"])
    parse_message(xml)
    return web.Response(text="success")


app = web.Application()
app.router.add_post("/wechat/{appid}", receive)
web.run_app(app, host="127.0.0.1", port=int(port), access_log=None, print=None)
