// A minimal express + node `wechat` middleware push endpoint: verify, decrypt, parse,
// answer with an empty body (its way of acknowledging). Stores nothing.
const express = require('express');
const wechat = require('wechat');

const [port, token, key, appid] = process.argv.slice(2);
const app = express();
app.use(`/wechat/${appid}`, wechat({ token, appid, encodingAESKey: key }, (req, res) => res.reply('')));
app.listen(Number(port), '127.0.0.1');
